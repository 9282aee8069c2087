"""h2k's repair pipelines against virt-v2v, on the same real Debian 12 guest, with and without
a large deleted file.

For each layout of tests/support/debian_guests.py (built and cached on first use; needs root)
two guests are made from the cached VMware-like disk (no virtio in the initramfs, root
/dev/sda1): "garbage" carries the blocks of a --garbage-mib file of random bytes written into
its root file system and deleted again (through a loop mount at the partition's offset, before
the disk becomes a VMDK again, as real VMDKs carry deleted files), "clean" is the disk as cached.
On each, one after the other in the same run:

  h2k overlay     the agent's ``run_repair`` (offline_fix, in-process, qcow2 out) as it is now:
                  repaired in an overlay over the read-only source, trimmed, copied once
                  (bench.repair_overlay.overlay)
  h2k before      the order before it: convert, then repair the copy in place
                  (bench.repair_overlay.convert_then_repair)
  virt-v2v        ``virt-v2v -i disk <vmdk> -o local -os <dir> -of qcow2`` (libguestfs under
                  TCG: KVM hangs guests on this machine)

Every output is booted by ``agent.boot.boot_check`` (one rule for "it boots"). Reported per
way: wall seconds of the conversion, the bytes its processes wrote (children's rusage), the
output's allocated bytes (``du``; qemu-img info's "disk size"), the boot verdict. Then what
each way changed in the guest: source and outputs are converted to raw, their root file
systems mounted read-only by a loop at the partition's offset, and the file lists and key files
(fstab, grub.cfg, initramfs module lists, /etc/modprobe.d, network files) compared.

    python -m bench.v2v_compare [--layouts bios,uefi] [--garbage-mib 1024] [--guests garbage,clean]

Needs virt-v2v, nbdkit and libnbd-bin (nbdcopy: virt-v2v 2.x copies with it; without it the
copy fails with "nbdcopy command failed"), none installed by scripts/setup.sh, and minutes of
TCG per virt-v2v run. virt-v2v's full log of each run is kept next to --json (or in /var/tmp).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import machine_line, print_table
from bench.repair_overlay import (
    allocated,
    convert_then_repair,
    libguestfs_env,
    overlay,
    written_bytes,
)
from tests.support.debian_guests import copy_guest

MiB = 1024 * 1024
BOOT_SECONDS = 300
V2V_TIMEOUT = 3600
GARBAGE_MIB = 1024
OVERLAY = "h2k overlay (trim, one copy)"
BEFORE = "h2k convert then repair (before)"
V2V = "virt-v2v -i disk -o local"
KEY_FILES = (
    "etc/fstab",
    "boot/grub/grub.cfg",
    "etc/default/grub",
    "etc/network/interfaces",
    "etc/initramfs-tools/modules",
    "etc/hostname",
)
KEY_DIRS = ("etc/modprobe.d", "etc/systemd/network", "etc/NetworkManager/system-connections")


@dataclass
class Run:
    """One way on one guest: what it cost and whether its output boots."""

    guest: str
    way: str
    seconds: float | None = None
    written: int | None = None
    output: Path | None = None
    output_bytes: int | None = None
    boot: str = "-"
    error: str = ""


def _boot(disk: Path, firmware: str, workdir: Path) -> str:
    from agent.boot.check import GuestDisk, boot_check

    result = asyncio.run(
        boot_check([GuestDisk(disk, "qcow2")], firmware, workdir, time_limit=BOOT_SECONDS)
    )
    verdict = result.describe()
    return f"{verdict.get('result')} {verdict.get('stage') or ''}".strip()


def _v2v(source: Path, work: Path, log: Path) -> Path:
    outdir = work / "out"
    outdir.mkdir(parents=True)
    argv = ["virt-v2v", "-v", "-x", "-i", "disk", str(source), "-o", "local"]
    argv += ["-os", str(outdir), "-of", "qcow2", "-on", "guest"]
    with log.open("w") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=V2V_TIMEOUT,
                              env=libguestfs_env(), check=False)  # fmt: skip
    if done.returncode != 0:
        errors = [line for line in log.read_text(errors="replace").splitlines() if "error" in line]
        raise RuntimeError(f"exit {done.returncode}: {' / '.join(errors[-2:])[:300]} (log {log})")
    return outdir / "guest-sda"


def _ways(log_dir: Path, guest: str) -> dict[str, Callable[[Path, Path], Path]]:
    return {
        OVERLAY: lambda s, w: overlay(s, w, True),
        BEFORE: convert_then_repair,
        V2V: lambda s, w: _v2v(s, w, log_dir / f"v2v-{guest}.log"),
    }


def _warm(source: Path) -> None:
    """Read the source once so that every way starts from the page cache."""
    with source.open("rb") as f:
        while f.read(8 * MiB):
            pass


def _measure(run: Run, way: Callable[[Path, Path], Path], source: Path, work: Path) -> None:
    _warm(source)
    written = written_bytes()
    started = time.monotonic()
    try:
        output = way(source, work)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        run.error = str(exc)
        return
    subprocess.run(["sync"], check=True)
    run.seconds = time.monotonic() - started
    run.written = written_bytes() - written
    run.output, run.output_bytes = output, allocated(output)


def _root_offset(raw: Path) -> int:
    """Byte offset of the largest partition (the root file system in these layouts)."""
    table = json.loads(subprocess.run(["sfdisk", "-J", str(raw)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]  # fmt: skip
    largest = max(table["partitions"], key=lambda p: p["size"])
    return int(largest["start"]) * int(table.get("sectorsize", 512))


@contextlib.contextmanager
def _root_fs(raw: Path, work: Path, *, writable: bool = False) -> Iterator[Path]:
    """The root file system of a raw disk, mounted by a loop device at its partition's offset."""
    argv = ["losetup", "-f", "--show", "-o", str(_root_offset(raw)), str(raw)]
    if not writable:
        argv.insert(1, "-r")
    loop = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    target = Path(tempfile.mkdtemp(dir=work, prefix="mnt-"))
    try:
        subprocess.run(["mount", "-o", "rw" if writable else "ro,noload", loop, str(target)],
                       check=True)  # fmt: skip
        try:
            yield target
        finally:
            subprocess.run(["umount", str(target)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
        target.rmdir()


@contextlib.contextmanager
def _mounted(image: Path, fmt: str, work: Path) -> Iterator[Path]:
    """The root file system of ``image`` (any format), read-only, from a raw copy."""
    raw = Path(tempfile.mkdtemp(dir=work, prefix="raw-")) / "disk.raw"
    try:
        subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(raw)],
                       check=True)  # fmt: skip
        with _root_fs(raw, work) as root:
            yield root
    finally:
        raw.unlink(missing_ok=True)
        raw.parent.rmdir()


def add_garbage(vmdk: Path, mib: int, work: Path) -> None:
    """Write ``mib`` MiB of random bytes into the guest's root file system and delete them
    again, so the VMDK carries blocks no file uses (through a raw copy, then a VMDK again)."""
    raw = work / "garbage.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw", str(vmdk), str(raw)],
                   check=True)  # fmt: skip
    with _root_fs(raw, work, writable=True) as root:
        deleted = root / "deleted.bin"
        with deleted.open("wb") as f:
            for _ in range(mib):
                f.write(os.urandom(MiB))
            f.flush()
            os.fsync(f.fileno())
        deleted.unlink()
    vmdk.unlink()
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(vmdk)],
                   check=True)  # fmt: skip
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


def _run_guest(
    layout: str, guest_name: str, garbage_mib: int, work: Path, logs: Path, diff: bool
) -> tuple[list[Run], dict[str, Any]]:
    """Every way on one guest (fresh copy of the cached layout); runs and guest changes."""
    guest = copy_guest(layout, work / "in")
    source = guest.disks[0]
    if garbage_mib:
        add_garbage(source, garbage_mib, work)
    before = None
    if diff:
        with _mounted(source, "vmdk", work) as root:
            before = _snapshot(root)
    runs: list[Run] = []
    changes: dict[str, Any] = {}
    label = f"{layout} {guest_name}"
    for number, (way, call) in enumerate(_ways(logs, f"{layout}-{guest_name}").items()):
        run = Run(label, way)
        runs.append(run)
        way_dir = work / f"way-{number}"
        way_dir.mkdir()
        _measure(run, call, source, way_dir)
        if run.output is not None:
            run.boot = _boot(run.output, guest.firmware, way_dir / "boot")
            if before is not None:
                with _mounted(run.output, "qcow2", work) as root:
                    changes[way] = _changes(before, _snapshot(root))
        print("done:", " | ".join(str(c) for c in _row(run)), flush=True)  # a long run's progress
        shutil.rmtree(way_dir)  # the next way's room
    return runs, changes


def _row(run: Run) -> list[Any]:
    if run.error:
        return [run.guest, run.way, "-", "-", "-", f"failed: {run.error}"]
    assert run.seconds is not None and run.written is not None and run.output_bytes is not None
    return [run.guest, run.way, f"{run.seconds:.1f}", f"{run.written / MiB:.0f}",
            f"{run.output_bytes / MiB:.0f}", run.boot]  # fmt: skip


def _bars(runs: list[Run]) -> list[str]:
    """The issue's bars, per guest: h2k's output against virt-v2v's + 5 %, and the wall time of
    the overlay pipeline against the order before."""
    lines = []
    for guest in dict.fromkeys(r.guest for r in runs):
        by_way = {r.way: r for r in runs if r.guest == guest}
        h2k, before, v2v = by_way[OVERLAY], by_way[BEFORE], by_way[V2V]
        if h2k.output_bytes is not None and v2v.output_bytes is not None:
            ratio = h2k.output_bytes / v2v.output_bytes
            met = "met" if ratio <= 1.05 else "MISSED"
            lines.append(f"{guest}: output h2k/virt-v2v = {ratio:.3f} (bar <= 1.05): {met}")
        else:
            lines.append(f"{guest}: output bar not measured (a way failed)")
        if h2k.seconds is not None and before.seconds is not None:
            lines.append(f"{guest}: wall h2k overlay {h2k.seconds:.1f} s vs before "
                         f"{before.seconds:.1f} s")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--layouts", default="bios")
    parser.add_argument("--guests", default="garbage,clean", help="garbage, clean or both")
    parser.add_argument("--garbage-mib", type=int, default=GARBAGE_MIB)
    parser.add_argument("--logs", type=Path, default=Path("/var/tmp/h2k-bench-v2v-logs"),
                        help="where virt-v2v's verbose logs are kept")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write every difference here")
    parser.add_argument("--no-diff", action="store_true", help="skip what each way changed")
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    print(machine_line(), flush=True)
    runs: list[Run] = []
    everything: dict[str, Any] = {}
    for layout in args.layouts.split(","):
        for guest_name in args.guests.split(","):
            garbage = args.garbage_mib if guest_name == "garbage" else 0
            with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="h2k-bench-v2v-") as name:
                guest_runs, changes = _run_guest(
                    layout, guest_name, garbage, Path(name), args.logs, not args.no_diff
                )
            runs += guest_runs
            everything[f"{layout} {guest_name}"] = changes
            for way, change in changes.items():
                print(f"\n== {layout} {guest_name} / {way}")
                for kind in ("added", "removed", "changed", "initramfs_added",
                             "initramfs_removed"):  # fmt: skip
                    print(f"{kind} ({len(change[kind])}): {_short(change[kind])}")
                for key, text in change["keys"].items():
                    print(f"--- {key} now:\n{text if text is not None else '(absent)'}")
    print_table(
        f"h2k against virt-v2v on debootstrapped Debian 12 guests ({machine_line()}; "
        f"garbage: {args.garbage_mib} MiB deleted)",
        ["guest", "way", "wall s", "written MiB", "output MiB", "boot"],
        [_row(r) for r in runs],
    )
    for line in _bars(runs):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
