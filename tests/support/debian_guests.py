"""Real Debian 12 guests, built with debootstrap and laid out the way VMware leaves them.

The guests boot for real (kernel, systemd, initramfs-tools, GRUB) and carry what makes a VMware
guest fail on KVM: an initramfs with the drivers of the VMware controllers only (``MODULES=list``
with ahci, mptspi, vmw_pvscsi: no virtio) and the root named ``/dev/sda1`` in fstab and on the
kernel command line. Layouts:

- ``bios``: MBR, one ext4 root, GRUB in the MBR and the gap after it;
- ``uefi``: GPT, ESP + ext4 ``/boot`` + ext4 root, GRUB only at ``\\EFI\\debian\\`` (VMware keeps
  the boot entry in NVRAM, so there is no ``\\EFI\\BOOT\\BOOTX64.EFI`` fallback);
- ``two_disks``: like ``bios``, with ``/var`` on a second disk named ``/dev/sdb1`` in fstab.

The expensive part, the debootstrapped tree, is built once per machine and kept as a tarball in
``$H2K_TEST_GUESTS_CACHE`` (default ``/var/cache/h2k-test-guests``) under the hash of the recipe
below; the assembled disks are cached next to it, keyed by this module's code as well. GRUB's
images are made with ``grub-mkimage`` from the guest's own GRUB modules (a loop per partition
cannot show grub-install a whole disk). Needs root, debootstrap, grub-mkimage, mkfs.ext4,
mkfs.vfat and mtools.

Run ``python -m tests.support.debian_guests`` to build (or check) the cache by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
CACHE_ENV = "H2K_TEST_GUESTS_CACHE"
DEFAULT_CACHE = Path("/var/cache/h2k-test-guests")
LAYOUTS = ("bios", "uefi", "two_disks")
BUILD_TIMEOUT = 3600

# Everything that decides the tree's content; its hash names the cache entry.
RECIPE = {
    "version": 1,
    "suite": "bookworm",
    "mirror": "http://deb.debian.org/debian",
    "variant": "minbase",
    "packages": [
        "linux-image-amd64",
        "systemd-sysv",
        "udev",
        "kmod",
        "initramfs-tools",
        "e2fsprogs",
        "grub2-common",
        "grub-pc-bin",
        "grub-efi-amd64-bin",
    ],
    "files": {
        # The VMware controllers' drivers only: what an installer on VMware leaves with
        # MODULES=dep, written out so that the chroot's hardware does not decide it.
        "/etc/initramfs-tools/modules": "ahci\nata_piix\nmptspi\nvmw_pvscsi\nsd_mod\next4\n",
        "/etc/initramfs-tools/conf.d/h2k-test-vmware": "MODULES=list\n",
        "/etc/hostname": "vmware-debian\n",
        "/etc/default/grub": (
            "GRUB_DEFAULT=0\nGRUB_TIMEOUT=1\nGRUB_DISTRIBUTOR=Debian\n"
            'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n'
            "GRUB_DISABLE_LINUX_UUID=true\n"
        ),
    },
}
GRUB_BIOS_MODULES = ["biosdisk", "part_msdos", "ext2", "search", "search_fs_uuid"]
GRUB_EFI_MODULES = [
    "part_gpt", "part_msdos", "ext2", "fat", "search", "search_fs_uuid", "normal", "linux",
    "configfile", "echo", "gzio", "efi_gop", "all_video", "boot", "test",
]  # fmt: skip


@dataclass(frozen=True)
class DebianGuest:
    """A built guest: its VMDKs (boot disk first) and what a test checks against."""

    layout: str
    disks: list[Path]
    firmware: str  # "bios" or "uefi"
    root_uuid: str
    kernel: str  # the guest's kernel version


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE)) / recipe_hash()


def _run(*argv: str, timeout: float = 600, cwd: Path | None = None) -> str:
    return subprocess.run(
        argv, check=True, capture_output=True, text=True, timeout=timeout, cwd=cwd
    ).stdout


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One builder per cache entry at a time (parallel test runs wait for the first)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _proc_mounted(tree: Path) -> Iterator[None]:
    _run("mount", "-t", "proc", "proc", str(tree / "proc"))
    try:
        yield
    finally:
        _run("umount", "-l", str(tree / "proc"))


def _build_tree(tarball: Path, scratch: Path) -> None:
    tree = scratch / "tree"
    debs = Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE)) / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    _run(
        "debootstrap",
        f"--variant={RECIPE['variant']}",
        f"--cache-dir={debs}",
        "--include=" + ",".join(RECIPE["packages"]),  # type: ignore[arg-type]
        str(RECIPE["suite"]),
        str(tree),
        str(RECIPE["mirror"]),
        timeout=BUILD_TIMEOUT,
    )
    for path, text in RECIPE["files"].items():  # type: ignore[attr-defined]
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (tree / "etc/machine-id").write_text("")  # systemd's first boot sets it, as on a clone
    with _proc_mounted(tree):
        _run("chroot", str(tree), "update-initramfs", "-c", "-k", "all", timeout=BUILD_TIMEOUT)
    for leftover in (tree / "var/cache/apt/archives").glob("*.deb"):
        leftover.unlink()
    partial = tarball.with_name("partial-" + tarball.name)  # tar -a compresses by the suffix
    _run("tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-caf", str(partial), ".",
         timeout=BUILD_TIMEOUT)  # fmt: skip
    os.replace(partial, tarball)


def tree_tarball() -> Path:
    """The cached tarball of the debootstrapped tree, built when missing."""
    directory = cache_dir()
    tarball = directory / "tree.tar.zst"
    with _locked(directory):
        if not tarball.exists():
            with tempfile.TemporaryDirectory(dir=directory) as scratch:
                _build_tree(tarball, Path(scratch))
    return tarball


def _kernel_version(tree: Path) -> str:
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (tree / "boot").glob("vmlinuz-*"))
    return kernels[-1]


def _grub_cfg(kernel: str, search_uuid: str, prefix: str, root_dev: str, part_mod: str) -> str:
    """A grub.cfg in the shape grub-mkconfig writes on Debian (root by device name)."""
    return f"""# Generated in the shape of Debian's grub-mkconfig
set default="0"
set timeout=1
insmod {part_mod}
insmod ext2
search --no-floppy --fs-uuid --set=root {search_uuid}
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class os {{
	insmod gzio
	insmod {part_mod}
	insmod ext2
	search --no-floppy --fs-uuid --set=root {search_uuid}
	echo	'Loading Linux {kernel} ...'
	linux	{prefix}/vmlinuz-{kernel} root={root_dev} ro quiet
	echo	'Loading initial ramdisk ...'
	initrd	{prefix}/initrd.img-{kernel}
}}
"""


def _mkfs_ext4(image: Path, size_mib: int, tree: Path, fs_uuid: str) -> None:
    with open(image, "wb") as f:
        f.truncate(size_mib * MiB)
    _run("mkfs.ext4", "-q", "-F", "-U", fs_uuid, "-d", str(tree), str(image), timeout=900)


def _place(partition: Path, raw: Path, start_mib: int) -> None:
    _run("dd", f"if={partition}", f"of={raw}", "bs=1M", f"seek={start_mib}",
         "conv=notrunc,sparse", "status=none", timeout=900)  # fmt: skip
    partition.unlink()


def _new_raw(raw: Path, size_mib: int, table: list[str]) -> None:
    with open(raw, "wb") as f:
        f.truncate(size_mib * MiB)
    subprocess.run(["sfdisk", "-q", str(raw)], input="\n".join(table) + "\n", text=True,
                   check=True, timeout=60)  # fmt: skip


def _to_vmdk(raw: Path, target: Path) -> None:
    _run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(target), timeout=900)
    raw.unlink()


def _install_grub_bios(tree: Path, raw: Path, prefix: str) -> None:
    """boot.img in the MBR, core.img in the gap after it (as grub-install lays them out)."""
    modules = tree / "usr/lib/grub/i386-pc"
    core = raw.with_name("core.img")
    _run("grub-mkimage", "-O", "i386-pc", "-d", str(modules), "-o", str(core),
         "-p", prefix, *GRUB_BIOS_MODULES)  # fmt: skip
    boot = (modules / "boot.img").read_bytes()
    with open(raw, "r+b") as disk:
        disk.write(boot[:440])  # keep the partition table
        disk.seek(512)
        disk.write(core.read_bytes())
    core.unlink()
    shutil.copytree(modules, tree / "boot/grub/i386-pc", dirs_exist_ok=True)


def _write_fstab(tree: Path, lines: list[str]) -> None:
    header = "# /etc/fstab: static file system information (written by the installer)\n"
    (tree / "etc/fstab").write_text(header + "".join(f"{line}\n" for line in lines))


def _extract(tarball: Path, tree: Path) -> None:
    tree.mkdir()
    _run("tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-xaf", str(tarball),
         timeout=900)  # fmt: skip


def _build_bios(tree: Path, scratch: Path, out: Path, var_on_second_disk: bool) -> DebianGuest:
    kernel = _kernel_version(tree)
    root_uuid = str(uuid.uuid4())
    fstab = ["/dev/sda1 / ext4 errors=remount-ro 0 1"]
    disks = [out / "disk0.vmdk"]
    if var_on_second_disk:
        var = scratch / "var"
        shutil.move(str(tree / "var"), var)
        (tree / "var").mkdir()
        fstab.append("/dev/sdb1 /var ext4 defaults 0 2")
        raw = scratch / "disk1.raw"
        _new_raw(raw, 1026, ["label: dos", "start=2048, type=83"])
        _mkfs_ext4(scratch / "var.img", 1024, var, str(uuid.uuid4()))
        _place(scratch / "var.img", raw, 1)
        disks.append(out / "disk1.vmdk")
        _to_vmdk(raw, disks[1])
    _write_fstab(tree, fstab)
    (tree / "boot/grub").mkdir(parents=True, exist_ok=True)
    cfg = _grub_cfg(kernel, root_uuid, "/boot", "/dev/sda1", "part_msdos")
    (tree / "boot/grub/grub.cfg").write_text(cfg)
    raw = scratch / "disk0.raw"
    _new_raw(raw, 3074, ["label: dos", "start=2048, type=83, bootable"])
    _install_grub_bios(tree, raw, "(hd0,msdos1)/boot/grub")
    _mkfs_ext4(scratch / "root.img", 3072, tree, root_uuid)
    _place(scratch / "root.img", raw, 1)
    _to_vmdk(raw, disks[0])
    layout = "two_disks" if var_on_second_disk else "bios"
    return DebianGuest(layout, disks, "bios", root_uuid, kernel)


def _build_esp(image: Path, size_mib: int, files: dict[str, Path]) -> None:
    with open(image, "wb") as f:
        f.truncate(size_mib * MiB)
    _run("mkfs.vfat", "-F", "32", str(image))
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    made: set[str] = set()
    for target, source in files.items():
        parts = target.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            directory = "/".join(parts[:depth])
            if directory not in made:
                subprocess.run(["mmd", "-i", str(image), f"::{directory}"], env=env, check=True,
                               capture_output=True, timeout=60)  # fmt: skip
                made.add(directory)
        subprocess.run(["mcopy", "-i", str(image), str(source), f"::{target.strip('/')}"],
                       env=env, check=True, capture_output=True, timeout=60)  # fmt: skip


def _build_uefi(tree: Path, scratch: Path, out: Path) -> DebianGuest:
    kernel = _kernel_version(tree)
    root_uuid, boot_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    boot = scratch / "boot"
    shutil.move(str(tree / "boot"), boot)
    (tree / "boot").mkdir()  # the mount point of /boot, and /boot/efi's on the /boot fs
    (boot / "efi").mkdir()
    _write_fstab(tree, [
        "/dev/sda3 / ext4 errors=remount-ro 0 1",
        "/dev/sda2 /boot ext4 defaults 0 2",
        "/dev/sda1 /boot/efi vfat umask=0077 0 1",
    ])  # fmt: skip
    (boot / "grub").mkdir(exist_ok=True)
    (boot / "grub/grub.cfg").write_text(_grub_cfg(kernel, boot_uuid, "", "/dev/sda3", "part_gpt"))
    shutil.copytree(tree / "usr/lib/grub/x86_64-efi", boot / "grub/x86_64-efi")
    # What grub-install puts in \EFI\debian\: the image, with a config that finds /boot.
    load_cfg = scratch / "load.cfg"
    load_cfg.write_text(f"search.fs_uuid {boot_uuid} root\nset prefix=($root)'/grub'\n")
    grub_efi = scratch / "grubx64.efi"
    _run("grub-mkimage", "-O", "x86_64-efi", "-d", str(tree / "usr/lib/grub/x86_64-efi"),
         "-o", str(grub_efi), "-c", str(load_cfg), "-p", "/grub",
         *GRUB_EFI_MODULES)  # fmt: skip
    raw = scratch / "disk0.raw"
    _new_raw(raw, 3138, [
        "label: gpt",
        "start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "start=133120, size=524288, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        "start=657408, size=5767168, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    ])  # fmt: skip
    esp = scratch / "esp.img"
    _build_esp(esp, 64, {"/EFI/debian/grubx64.efi": grub_efi, "/EFI/debian/grub.cfg": load_cfg})
    _place(esp, raw, 1)
    _mkfs_ext4(scratch / "boot.img", 256, boot, boot_uuid)
    _place(scratch / "boot.img", raw, 65)
    _mkfs_ext4(scratch / "root.img", 2816, tree, root_uuid)
    _place(scratch / "root.img", raw, 321)
    disks = [out / "disk0.vmdk"]
    _to_vmdk(raw, disks[0])
    return DebianGuest("uefi", disks, "uefi", root_uuid, kernel)


def _build_layout(layout: str, tarball: Path, out: Path) -> DebianGuest:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as name:
        scratch = Path(name)
        tree = scratch / "tree"
        _extract(tarball, tree)
        if layout == "uefi":
            return _build_uefi(tree, scratch, out)
        return _build_bios(tree, scratch, out, var_on_second_disk=layout == "two_disks")


def cached_guest(layout: str) -> DebianGuest:
    """The cached disks of one layout (built when missing); never modify them: copy first."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    directory = cache_dir()
    # Assembled disks are keyed by this module's code too (the tree only by the recipe).
    out = directory / f"{layout}-{hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]}"
    meta = out / "guest.json"
    tarball = tree_tarball()
    with _locked(directory):
        if not meta.exists():
            shutil.rmtree(out, ignore_errors=True)
            guest = _build_layout(layout, tarball, out)
            doc = {**guest.__dict__, "disks": [str(d) for d in guest.disks]}
            meta.write_text(json.dumps(doc))
    doc = json.loads(meta.read_text())
    return DebianGuest(**{**doc, "disks": [Path(d) for d in doc["disks"]]})


def copy_guest(layout: str, directory: Path) -> DebianGuest:
    """A private copy of one layout's disks in ``directory`` (tests may change these)."""
    guest = cached_guest(layout)
    directory.mkdir(parents=True, exist_ok=True)
    disks = []
    for disk in guest.disks:
        target = directory / f"{layout}-{disk.name}"
        _run("cp", "--sparse=always", "--reflink=auto", str(disk), str(target))
        disks.append(target)
    return DebianGuest(guest.layout, disks, guest.firmware, guest.root_uuid, guest.kernel)


def missing_tools() -> str | None:
    """Why the Debian guests cannot be built here (None: they can)."""
    if os.geteuid() != 0:
        return "building Debian guests needs root"
    for tool in ("debootstrap", "grub-mkimage", "mkfs.ext4", "mkfs.vfat", "mcopy", "sfdisk"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup.sh installs it)"
    return None


if __name__ == "__main__":
    for name in sys.argv[1:] or LAYOUTS:
        print(cached_guest(name))
