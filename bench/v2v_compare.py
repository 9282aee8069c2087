"""h2k's repair and boot check against virt-v2v, on the same real Debian 12 guest.

For each layout of tests/support/debian_guests.py (built and cached on first use; needs root),
on fresh copies of the same VMware-like guest (no virtio in the initramfs, root /dev/sda1):

  h2k        ``offline_fix`` (the agent's ``run_repair`` in-process, qcow2 out), then its
             output booted by ``agent.boot.boot_check``
  virt-v2v   ``virt-v2v -i disk <vmdk> -o local -os <dir> -of qcow2`` (libguestfs under TCG),
             then its output booted by the same ``boot_check``: one rule for "it boots"

Reported per tool: wall seconds of the conversion and of the boot check, the output's allocated
bytes, the bytes its processes wrote (children's rusage), the boot verdict and stage. Then what
each tool changed in the guest: the source and both outputs are converted to raw, their root
file systems mounted read-only by a loop at the partition's offset, and the file lists and key
files (fstab, grub.cfg, initramfs module lists, /etc/modprobe.d, network files) compared.

    python -m bench.v2v_compare [--layouts bios,uefi]

Needs virt-v2v and nbdkit (not installed by scripts/setup.sh) and minutes of TCG per run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.ops.base import JobContext
from agent.ops.repair import run_repair
from agent.paths import PathPolicy
from agent.progress import ProgressReporter
from bench.common import machine_line, print_table
from devsupport.specs import job_spec
from protocol.spec import parse_spec
from tests.support.debian_guests import copy_guest

BOOT_SECONDS = 300
V2V_TIMEOUT = 3600
KEY_FILES = (
    "etc/fstab",
    "boot/grub/grub.cfg",
    "etc/default/grub",
    "etc/network/interfaces",
    "etc/initramfs-tools/modules",
    "etc/hostname",
)
KEY_DIRS = ("etc/modprobe.d", "etc/systemd/network", "etc/NetworkManager/system-connections")


class _Quiet(ProgressReporter):
    """Progress that goes nowhere (the repair runs in-process)."""

    def __init__(self) -> None:
        self.phase, self.percent = "start", 0.0

    def report(self, phase: str, percent: float, **_: Any) -> bool:
        return True


def _context(source: Path, outdir: Path, state: Path, job_id: str) -> JobContext:
    doc = job_spec(
        "offline_fix",
        image=source,
        image_format=source.suffix.lstrip("."),
        output=outdir,
        job_id=job_id,
        parameters={"output_format": "qcow2", "compress": False},
        capability_requirements={"needs_mount": True},
    )
    policy = PathPolicy([source.parent, outdir], [outdir])
    return JobContext(parse_spec(doc), source, outdir, state, policy, _Quiet())


def _written() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock * 512


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def _env() -> dict[str, str]:
    # KVM hangs guests on this machine: the libguestfs appliance runs under TCG.
    return {
        **os.environ,
        "LIBGUESTFS_BACKEND": "direct",
        "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg",
    }


def _boot(disk: Path, firmware: str, workdir: Path) -> tuple[float, dict[str, Any]]:
    from agent.boot.check import GuestDisk, boot_check

    started = time.monotonic()
    result = asyncio.run(
        boot_check([GuestDisk(disk, "qcow2")], firmware, workdir, time_limit=BOOT_SECONDS)
    )
    return time.monotonic() - started, result.describe()


def _h2k(source: Path, work: Path) -> tuple[float, int, Path]:
    outdir = work / "h2k-out"
    outdir.mkdir(parents=True)
    ctx = _context(source, outdir, work / "h2k-state", f"v2v-compare-{os.getpid()}")
    written = _written()
    started = time.monotonic()
    asyncio.run(run_repair(ctx))
    subprocess.run(["sync"], check=True)
    return time.monotonic() - started, _written() - written, outdir / f"{source.stem}.qcow2"


def _v2v(source: Path, work: Path) -> tuple[float, int, Path, list[str]]:
    outdir = work / "v2v-out"
    outdir.mkdir(parents=True)
    argv = ["virt-v2v", "-i", "disk", str(source), "-o", "local", "-os", str(outdir)]
    argv += ["-of", "qcow2", "-on", "guest"]
    written = _written()
    started = time.monotonic()
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=V2V_TIMEOUT, env=_env(), check=False
    )
    subprocess.run(["sync"], check=True)
    seconds = time.monotonic() - started
    log = (done.stdout + done.stderr).splitlines()
    (work / "v2v.log").write_text("\n".join(log))
    if done.returncode != 0:
        raise RuntimeError(f"virt-v2v exit {done.returncode}: {' / '.join(log[-5:])}")
    return seconds, _written() - written, outdir / "guest-sda", log


def _root_offset(raw: Path) -> int:
    """Byte offset of the largest partition (the root file system in these layouts)."""
    table = json.loads(subprocess.run(["sfdisk", "-J", str(raw)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]  # fmt: skip
    largest = max(table["partitions"], key=lambda p: p["size"])
    return int(largest["start"]) * int(table.get("sectorsize", 512))


@contextlib.contextmanager
def _mounted(image: Path, fmt: str, work: Path) -> Iterator[Path]:
    raw = work / f"{image.stem}-{fmt}.raw"
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(raw)],
                   check=True)  # fmt: skip
    argv = ["losetup", "-f", "--show", "-r", "-o", str(_root_offset(raw)), str(raw)]
    loop = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    target = work / f"mnt-{image.stem}-{fmt}"
    target.mkdir()
    try:
        subprocess.run(["mount", "-o", "ro,noload", loop, str(target)], check=True)
        try:
            yield target
        finally:
            subprocess.run(["umount", str(target)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
        raw.unlink()


def _tree(root: Path) -> dict[str, str]:
    """Every path under root with a digest of what it is (file content, link target, dir)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel.startswith(("proc/", "sys/", "dev/", "run/")):
                continue
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            elif path.is_file():
                digest = hashlib.sha1()
                with path.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                out[rel] = digest.hexdigest()
            else:
                out[rel] = "special"
    return out


def _initramfs_modules(root: Path) -> dict[str, list[str]]:
    out = {}
    for image in sorted((root / "boot").glob("initrd.img-*")):
        listing = subprocess.run(["lsinitramfs", str(image)], capture_output=True, text=True,
                                 check=False).stdout.splitlines()  # fmt: skip
        out[image.name] = sorted(
            Path(p).name.removesuffix(".xz").removesuffix(".zst").removesuffix(".ko")
            for p in listing
            if "/kernel/" in p and (".ko" in p)
        )
    return out


def _snapshot(root: Path) -> dict[str, Any]:
    keys: dict[str, str | None] = {}
    for rel in KEY_FILES:
        path = root / rel
        keys[rel] = path.read_text(errors="replace") if path.is_file() else None
    for rel in KEY_DIRS:
        directory = root / rel
        if directory.is_dir():
            for child in sorted(directory.iterdir()):
                if child.is_file():
                    keys[str(child.relative_to(root))] = child.read_text(errors="replace")
    return {"tree": _tree(root), "keys": keys, "initramfs": _initramfs_modules(root)}


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    old, new = before["tree"], after["tree"]
    modules_before = {m for mods in before["initramfs"].values() for m in mods}
    modules_after = {m for mods in after["initramfs"].values() for m in mods}
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(p for p in set(old) & set(new) if old[p] != new[p] and old[p] != "dir"),
        "initramfs_added": sorted(modules_after - modules_before),
        "initramfs_removed": sorted(modules_before - modules_after),
        "keys": {k: v for k, v in after["keys"].items() if before["keys"].get(k) != v},
    }


def _short(paths: list[str], limit: int = 40) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" (+{len(paths) - limit} more)" if len(paths) > limit else "") or "-"


def _run_layout(layout: str, work: Path) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    guest = copy_guest(layout, work / "in")
    source = guest.disks[0]
    rows: list[tuple[Any, ...]] = []
    outputs: dict[str, Path] = {}
    h2k_s, h2k_w, h2k_out = _h2k(source, work)
    boot_s, verdict = _boot(h2k_out, guest.firmware, work / "h2k-boot")
    outputs["h2k"] = h2k_out
    rows.append((layout, "h2k offline_fix", f"{h2k_s:.1f}", f"{boot_s:.1f}",
                 f"{_allocated(h2k_out) / 2**20:.0f}", f"{h2k_w / 2**20:.0f}",
                 f"{verdict.get('result')} {verdict.get('stage') or ''}"))  # fmt: skip
    v2v_copy = copy_guest(layout, work / "in-v2v").disks[0]
    try:
        v2v_s, v2v_w, v2v_out, _log = _v2v(v2v_copy, work)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        rows.append((layout, "virt-v2v", "-", "-", "-", "-", str(exc)[:200]))
    else:
        boot_s, verdict = _boot(v2v_out, guest.firmware, work / "v2v-boot")
        outputs["virt-v2v"] = v2v_out
        rows.append((layout, "virt-v2v", f"{v2v_s:.1f}", f"{boot_s:.1f}",
                     f"{_allocated(v2v_out) / 2**20:.0f}", f"{v2v_w / 2**20:.0f}",
                     f"{verdict.get('result')} {verdict.get('stage') or ''}"))  # fmt: skip
    with _mounted(source, "vmdk", work) as root:
        before = _snapshot(root)
    changes = {}
    for tool, image in outputs.items():
        with _mounted(image, "qcow2", work) as root:
            changes[tool] = _changes(before, _snapshot(root))
    return rows, changes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", default="bios")
    parser.add_argument("--json", type=Path, help="also write every difference here")
    args = parser.parse_args(argv)
    rows: list[tuple[Any, ...]] = []
    everything: dict[str, Any] = {}
    for layout in args.layouts.split(","):
        with tempfile.TemporaryDirectory(dir="/var/tmp") as name:
            layout_rows, changes = _run_layout(layout, Path(name))
        rows += layout_rows
        everything[layout] = changes
        for tool, change in changes.items():
            print(f"\n== {layout} / {tool}")
            for kind in ("added", "removed", "changed", "initramfs_added", "initramfs_removed"):
                print(f"{kind} ({len(change[kind])}): {_short(change[kind])}")
            for key, text in change["keys"].items():
                print(f"--- {key} now:\n{text if text is not None else '(absent)'}")
    print_table(
        f"h2k against virt-v2v on debootstrapped Debian 12 guests ({machine_line()})",
        ["guest", "tool", "convert s", "boot check s", "output MiB", "written MiB", "boot"],
        rows,
    )
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
