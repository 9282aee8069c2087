"""Build small real guest disks the way VMware leaves them, and read them back independently.

Two guests, both naming their partitions ``/dev/sdaN`` like a VMware guest does:

- RHEL-like: GPT, ext4 ``/boot`` (BLS entries, grub2 with device.map), xfs root, ifcfg with
  HWADDR, a NetworkManager keyfile bound to a MAC, dracut, SELinux enforcing, vmtoolsd enabled;
- Debian-like (also :func:`build_debian_uefi`: GPT, an ESP at ``/boot/efi``): MBR, one ext4
  root and a swap partition, grub.cfg, initramfs-tools, netplan
  with a MAC match, 70-persistent-net.rules, open-vm-tools (systemd and SysV links).

``details=True`` adds what guest inspection reads and the repair tests do not need: kernel
module lists, an initramfs image (RHEL-like: gzip, VMware drivers only; Debian-like: early
microcode cpio + zstd, with the virtio drivers), ``/sbin/init`` and a dpkg database.

File systems are made from directory trees (``mkfs.ext4 -d``; xfs by a loop mount), put into a
raw disk at their partition offsets, and the disk is converted to a VMDK. Needs root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.initramfs import VIRTIO_MODULES, VMWARE_MODULES, initramfs_image

MiB = 1024 * 1024
VMWARE_MAC = "00:50:56:8a:3c:19"


@dataclass(frozen=True)
class Link:
    target: str


@dataclass(frozen=True)
class Program:
    """An executable file (mode 0755)."""

    content: bytes


Tree = dict[str, "str | bytes | Link | Program"]  # bytes: binary content (ballast, say)


@dataclass(frozen=True)
class PartitionSpec:
    fstype: str  # ext4, xfs, swap
    size_mib: int
    tree: Tree = field(default_factory=dict)
    mkfs_options: tuple[str, ...] = ()
    # A file of this many MiB of random bytes is written into the file system and deleted
    # again (through a loop mount), so the disk carries blocks no file uses, as real ones do.
    garbage_mib: int = 0


@dataclass(frozen=True)
class GuestDisk:
    kind: str
    path: Path  # the VMDK
    label: str  # gpt or dos
    partitions: dict[int, str]  # number -> fstype
    root_partition: int
    boot_partition: int | None


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300).stdout


def _write_tree(directory: Path, tree: Tree) -> None:
    for rel, content in tree.items():
        path = directory / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            os.symlink(content.target, path)
        elif isinstance(content, Program):
            path.write_bytes(content.content)
            path.chmod(0o755)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.write_text(content)


def _make_filesystem(image: Path, spec: PartitionSpec, scratch: Path) -> None:
    with open(image, "wb") as f:
        f.truncate(spec.size_mib * MiB)
    tree = scratch / f"tree-{image.name}"
    tree.mkdir()
    _write_tree(tree, spec.tree)
    if spec.fstype == "ext4":
        _run("mkfs.ext4", "-q", "-F", *spec.mkfs_options, "-d", str(tree), str(image))
    elif spec.fstype == "swap":
        _run("mkswap", str(image))
    elif spec.fstype == "xfs":
        _run("mkfs.xfs", "-q", *spec.mkfs_options, str(image))
        mnt = scratch / f"mnt-{image.name}"
        mnt.mkdir()
        _run("mount", "-o", "loop", str(image), str(mnt))
        try:
            _run("cp", "-a", f"{tree}/.", str(mnt))
        finally:
            _run("umount", str(mnt))
    elif spec.fstype == "vfat":  # an EFI system partition
        _run("mkfs.vfat", *spec.mkfs_options, str(image))
        entries = [str(entry) for entry in sorted(tree.iterdir())]
        if entries:
            _run("mcopy", "-s", "-i", str(image), *entries, "::/")
    else:
        raise ValueError(spec.fstype)
    if spec.garbage_mib:
        _write_garbage(image, spec.garbage_mib, scratch)


def _write_garbage(image: Path, mib: int, scratch: Path) -> None:
    mnt = scratch / f"garbage-{image.name}"
    mnt.mkdir()
    _run("mount", "-o", "loop", str(image), str(mnt))
    try:
        with open(mnt / "deleted.bin", "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(MiB))
            f.flush()
            os.fsync(f.fileno())
        (mnt / "deleted.bin").unlink()
    finally:
        _run("umount", str(mnt))
    mnt.rmdir()


def host_programs(*names: str) -> Tree:
    """This machine's programs ``names`` (found on PATH) and the libraries they load, as a
    guest tree: enough for a chroot into the guest to run them."""
    tree: Tree = {}
    for name in names:
        binary = Path(shutil.which(name) or name).resolve()
        tree[f"/usr/bin/{name}"] = Program(binary.read_bytes())
        for line in _run("ldd", str(binary)).splitlines():
            parts = line.split()
            library = next((p for p in parts if p.startswith("/")), None)
            if library is not None:
                tree[str(Path(library))] = Program(Path(library).resolve().read_bytes())
    return tree


def build_disk(
    target: Path, label: str, partitions: list[PartitionSpec], scratch: Path
) -> dict[int, str]:
    """A VMDK at ``target`` with ``partitions`` laid out from 1 MiB on, 1 MiB apart."""
    raw = scratch / "disk.raw"
    total = 2 + sum(p.size_mib for p in partitions) + len(partitions)
    with open(raw, "wb") as f:
        f.truncate(total * MiB)
    lines = [f"label: {label}"]
    offset = 1
    offsets = []
    for spec in partitions:
        kind = {"swap": "S", "vfat": "U"}.get(spec.fstype, "L")
        lines.append(f"start={offset * 2048}, size={spec.size_mib * 2048}, type={kind}")
        offsets.append(offset)
        offset += spec.size_mib + 1
    subprocess.run(["sfdisk", "-q", str(raw)], input="\n".join(lines) + "\n", text=True, check=True)
    for number, (spec, start) in enumerate(zip(partitions, offsets, strict=True), 1):
        image = scratch / f"p{number}.img"
        _make_filesystem(image, spec, scratch)
        _run(
            "dd",
            f"if={image}",
            f"of={raw}",
            "bs=1M",
            f"seek={start}",
            "conv=notrunc,sparse",
            "status=none",
        )
        image.unlink()
    _run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(target))
    raw.unlink()
    return {n: spec.fstype for n, spec in enumerate(partitions, 1)}


RHEL_KERNEL = "5.14.0-284.el9.x86_64"
DEBIAN_KERNEL = "6.1.0-18-amd64"
DEBIAN_DPKG_STATUS = (
    "Package: open-vm-tools\nStatus: install ok installed\nVersion: 2:12.2.0-1\n\n"
    "Package: qemu-guest-agent\nStatus: deinstall ok config-files\nVersion: 1:7.2\n\n"
    "Package: systemd-sysv\nStatus: install ok installed\nVersion: 252.22-1\n"
)


def write_tree(directory: Path, tree: Tree) -> None:
    """Write ``tree`` under ``directory`` (for tests that read a guest as a directory)."""
    _write_tree(directory, tree)


def _rhel_details() -> tuple[Tree, Tree]:
    root: Tree = {
        "/lib": Link("usr/lib"),
        "/sbin": Link("usr/sbin"),
        "/usr/sbin/init": Link("../lib/systemd/systemd"),
        "/usr/lib/systemd/systemd": "ELF systemd\n",
        f"/usr/lib/modules/{RHEL_KERNEL}/modules.builtin": "kernel/drivers/ata/libata.ko\n"
        "kernel/drivers/scsi/sd_mod.ko\n",
    }
    boot: Tree = {
        f"/initramfs-{RHEL_KERNEL}.img": initramfs_image(RHEL_KERNEL, VMWARE_MODULES, "gzip"),
    }
    return root, boot


def _debian_details(compression: str) -> Tree:
    modules = (*VMWARE_MODULES, *VIRTIO_MODULES)
    return {
        "/sbin/init": Link("/lib/systemd/systemd"),
        "/lib/systemd/systemd": "ELF systemd\n",
        f"/lib/modules/{DEBIAN_KERNEL}/modules.builtin": "kernel/drivers/virtio/virtio.ko\n",
        f"/boot/vmlinuz-{DEBIAN_KERNEL}": "not a real kernel\n",
        f"/boot/initrd.img-{DEBIAN_KERNEL}": initramfs_image(
            DEBIAN_KERNEL, modules, compression, microcode=True
        ),
        "/var/lib/dpkg/status": DEBIAN_DPKG_STATUS,
    }


def rhel_trees(details: bool = False) -> tuple[Tree, Tree]:
    """The RHEL-like guest's root and /boot trees."""
    root, boot = _rhel_trees()
    if details:
        extra_root, extra_boot = _rhel_details()
        root, boot = {**root, **extra_root}, {**boot, **extra_boot}
    return root, boot


def debian_tree(details: bool = False, initramfs_compression: str = "zstd") -> Tree:
    """The Debian-like guest's root tree."""
    tree = _debian_tree()
    return {**tree, **_debian_details(initramfs_compression)} if details else tree


def _rhel_trees() -> tuple[Tree, Tree]:
    root: Tree = {
        "/etc/os-release": 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\n'
        'VERSION_ID="9.2"\nPRETTY_NAME="Red Hat Enterprise Linux 9.2 (Plow)"\n',
        "/etc/redhat-release": "Red Hat Enterprise Linux release 9.2 (Plow)\n",
        "/etc/fstab": "# Created by anaconda\n"
        "/dev/sda2   /       xfs     defaults        0 0\n"
        "/dev/sda1   /boot   ext4    defaults        1 2\n"
        "/dev/sdb1   /data   xfs     defaults,nofail 0 0\n"
        "tmpfs       /tmp    tmpfs   defaults        0 0\n",
        "/etc/default/grub": 'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="crashkernel=auto rhgb quiet"\n'
        "GRUB_ENABLE_BLSCFG=true\n",
        "/etc/sysconfig/network-scripts/ifcfg-ens192": "TYPE=Ethernet\nBOOTPROTO=dhcp\n"
        f"NAME=ens192\nDEVICE=ens192\nHWADDR={VMWARE_MAC.upper()}\nONBOOT=yes\n",
        "/etc/sysconfig/network-scripts/ifcfg-lo": "DEVICE=lo\nIPADDR=127.0.0.1\n",
        "/etc/NetworkManager/system-connections/ens192.nmconnection": "[connection]\n"
        "id=ens192\ntype=ethernet\n\n[ethernet]\n"
        f"mac-address={VMWARE_MAC.upper()}\n\n[ipv4]\nmethod=auto\n",
        "/etc/selinux/config": "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
        "/etc/dracut.conf.d/01-dist.conf": 'hostonly="yes"\n',
        "/usr/lib/systemd/system/vmtoolsd.service": "[Unit]\nDescription=VMware tools\n",
        "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service": Link(
            "/usr/lib/systemd/system/vmtoolsd.service"
        ),
        "/boot/": "",
        "/proc/": "",
        "/sys/": "",
        "/dev/": "",
    }
    boot: Tree = {
        "/loader/entries/0c3f-5.14.0-284.el9.x86_64.conf": "title Red Hat Enterprise Linux\n"
        "version 5.14.0-284.el9.x86_64\nlinux /vmlinuz-5.14.0-284.el9.x86_64\n"
        "initrd /initramfs-5.14.0-284.el9.x86_64.img\n"
        "options root=/dev/sda2 ro crashkernel=auto rhgb quiet\n",
        "/grub2/grub.cfg": "set default=0\nload_video\nblscfg\n",
        "/grub2/device.map": "(hd0)      /dev/sda\n",
        "/vmlinuz-5.14.0-284.el9.x86_64": "not a real kernel\n",
    }
    return root, boot


def build_rhel_like(directory: Path, name: str = "rhel-guest", details: bool = False) -> GuestDisk:
    root, boot = rhel_trees(details)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        parts = build_disk(
            directory / f"{name}.vmdk",
            "gpt",
            [PartitionSpec("ext4", 64, boot), PartitionSpec("xfs", 320, root)],
            Path(scratch),
        )
    return GuestDisk("rhel", directory / f"{name}.vmdk", "gpt", parts, 2, 1)


def _debian_tree() -> Tree:
    return {
        "/etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
        'VERSION_ID="12"\nID=debian\n',
        "/etc/debian_version": "12.5\n",
        "/etc/fstab": "# /etc/fstab: static file system information.\n"
        "/dev/sda1  /               ext4    errors=remount-ro 0 1\n"
        "/dev/sda2  none            swap    sw                0 0\n"
        "/dev/sr0   /media/cdrom0   udf,iso9660 user,noauto   0 0\n",
        "/etc/default/grub": 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
        'GRUB_CMDLINE_LINUX=""\n',
        "/boot/grub/grub.cfg": "menuentry 'Debian GNU/Linux' {\n"
        "\tlinux\t/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda1 ro quiet\n"
        "\tinitrd\t/boot/initrd.img-6.1.0-18-amd64\n}\n",
        "/boot/grub/device.map": "(hd0)   /dev/sda\n",
        "/etc/initramfs-tools/initramfs.conf": "MODULES=most\n",
        "/etc/initramfs-tools/modules": "# List of modules that you want to include.\n",
        "/etc/netplan/01-netcfg.yaml": "network:\n  version: 2\n  ethernets:\n    ens160:\n"
        f'      match:\n        macaddress: "{VMWARE_MAC}"\n      set-name: ens160\n'
        "      dhcp4: true\n",
        "/etc/udev/rules.d/70-persistent-net.rules": 'SUBSYSTEM=="net", ACTION=="add", '
        f'ATTR{{address}}=="{VMWARE_MAC}", NAME="ens160"\n',
        "/lib/systemd/system/open-vm-tools.service": "[Unit]\nDescription=open-vm-tools\n",
        "/etc/systemd/system/multi-user.target.wants/open-vm-tools.service": Link(
            "/lib/systemd/system/open-vm-tools.service"
        ),
        "/etc/init.d/open-vm-tools": "#!/bin/sh\nexit 0\n",
        "/etc/rc2.d/S01open-vm-tools": Link("../init.d/open-vm-tools"),
        "/proc/": "",
        "/sys/": "",
        "/dev/": "",
    }


def build_debian_like(
    directory: Path,
    name: str = "debian-guest",
    slow_fsck: bool = False,
    details: bool = False,
    *,
    garbage_mib: int = 0,
    size_mib: int = 192,
    extra: Tree | None = None,
) -> GuestDisk:
    """``slow_fsck``: a 2 GiB root with 4 M inodes and no uninit_bg, so e2fsck takes seconds.

    Args:
        garbage_mib: MiB of a deleted file's blocks left in the root file system.
        extra: more files for the root file system.
    """
    size: int = size_mib
    options: tuple[str, ...] = ()
    if slow_fsck:
        size, options = 2048, ("-N", "4000000", "-O", "^metadata_csum,^uninit_bg")
    tree = {**debian_tree(details), **(extra or {})}
    root = PartitionSpec("ext4", size, tree, options, garbage_mib=garbage_mib)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        parts = build_disk(
            directory / f"{name}.vmdk",
            "dos",
            [root, PartitionSpec("swap", 16)],
            Path(scratch),
        )
    return GuestDisk("debian", directory / f"{name}.vmdk", "dos", parts, 1, None)


def build_debian_uefi(directory: Path, name: str = "debian-uefi") -> GuestDisk:
    """The Debian-like guest on GPT with an EFI system partition (``/boot/efi``, named
    ``/dev/sda1``) whose GRUB sits only at ``\\EFI\\debian\\``, as a VMware UEFI VM
    leaves it (its boot entry is in the VM's NVRAM)."""
    tree = debian_tree(details=True)
    tree["/etc/fstab"] = (
        "/dev/sda2  /          ext4  errors=remount-ro  0 1\n"
        "/dev/sda1  /boot/efi  vfat  umask=0077         0 1\n"
    )
    tree["/boot/efi/"] = ""
    tree["/boot/grub/x86_64-efi/normal.mod"] = b"\x7fELF"
    esp: Tree = {
        "/EFI/debian/grubx64.efi": b"MZ grub",
        "/EFI/debian/shimx64.efi": b"MZ shim",
        "/EFI/debian/grub.cfg": "configfile $prefix/grub.cfg\n",
    }
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        parts = build_disk(
            directory / f"{name}.vmdk",
            "gpt",
            [PartitionSpec("vfat", 33, esp), PartitionSpec("ext4", 192, tree)],
            Path(scratch),
        )
    return GuestDisk("debian-uefi", directory / f"{name}.vmdk", "gpt", parts, 2, None)


# --- reading an image back, independently of the agent -----------------------------------


@dataclass
class OpenedDisk:
    """Partitions of an image, mounted read-only, and what blkid says about them."""

    mounts: dict[int, Path]
    blkid: dict[int, dict[str, str]]

    def read(self, number: int, path: str) -> str | None:
        target = self.mounts[number] / path.lstrip("/")
        if target.is_symlink() or not target.exists():
            return None
        return target.read_text()

    def exists(self, number: int, path: str) -> bool:
        return os.path.lexists(self.mounts[number] / path.lstrip("/"))

    def readlink(self, number: int, path: str) -> str | None:
        target = self.mounts[number] / path.lstrip("/")
        return os.readlink(target) if target.is_symlink() else None


def _blkid(device: str) -> dict[str, str]:
    result = subprocess.run(["blkid", "-p", "-o", "export", device], capture_output=True, text=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


@contextlib.contextmanager
def opened_readonly(image: Path, fmt: str, scratch: Path) -> Iterator[OpenedDisk]:
    """Convert ``image`` to a scratch raw file, attach each partition read-only and mount it."""
    raw = scratch / "readback.raw"
    _run("qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(raw))
    table = json.loads(_run("sfdisk", "-J", str(raw)))["partitiontable"]
    sector = table.get("sectorsize", 512)
    opened = OpenedDisk({}, {})
    loops: list[str] = []
    try:
        for number, entry in enumerate(table["partitions"], 1):
            loop = _run(
                "losetup",
                "--find",
                "--show",
                "--read-only",
                "--offset",
                str(entry["start"] * sector),
                "--sizelimit",
                str(entry["size"] * sector),
                str(raw),
            ).strip()
            loops.append(loop)
            info = _blkid(loop)
            opened.blkid[number] = info
            kind = info.get("TYPE")
            if kind not in ("ext4", "xfs"):
                continue
            mnt = scratch / f"readback-p{number}"
            mnt.mkdir(exist_ok=True)
            options = "ro,noload" if kind == "ext4" else "ro,norecovery"
            _run("mount", "-t", kind, "-o", options, loop, str(mnt))
            opened.mounts[number] = mnt
        yield opened
    finally:
        for mnt in reversed(list(opened.mounts.values())):
            subprocess.run(["umount", str(mnt)], check=False)
        for loop in reversed(loops):
            subprocess.run(["losetup", "-d", loop], check=False)
        raw.unlink(missing_ok=True)
