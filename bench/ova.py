"""A disk inside an OVA: converted in place (a byte range) against the same disk unpacked.

Ways, each once per round, in the same order; best and median over the rounds:
  in OVA            the agent's argv (agent.disk.qemu_img) with the byte-range json: source
  unpacked          the agent's argv on the disk as its own file (already unpacked)
  tar -x + convert  what reading in place saves: unpack the member first, then convert
  verify            qemu-img compare of the in-OVA source with the output (verify_content)

Every timed way ends with `sync`; the previous output is removed first.

    python -m bench.ova [--size-gib 1] [--rounds 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from agent.disk.qemu_img import ByteRange, ToolImage, convert_argv, source_filename

MiB = 1 << 20


def _build_ova(workdir: Path, size: int) -> tuple[Path, Path, tarfile.TarInfo]:
    raw = workdir / "disk.raw"
    rng = random.Random(1)
    with raw.open("wb") as f:  # data in every 16 MiB (some random, some compressible), holes
        f.truncate(size)
        for offset in range(0, size, 16 * MiB):
            f.seek(offset)
            f.write(rng.randbytes(5 * MiB) + b"guest file system data " * 220_000)
    vmdk = workdir / "disk1.vmdk"
    options = ["-o", "subformat=streamOptimized"]
    argv = ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", *options, str(raw), str(vmdk)]
    subprocess.run(argv, check=True)
    raw.unlink()
    (workdir / "vm.ovf").write_text("<Envelope/>\n")
    ova = workdir / "vm.ova"
    subprocess.run(["tar", "-cf", str(ova), "-C", str(workdir), "vm.ovf", vmdk.name], check=True)
    with tarfile.open(ova) as tar:
        return ova, vmdk, tar.getmember(vmdk.name)


def _timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sync"], check=True)
    return time.monotonic() - started


def _convert(source: ToolImage, output: Path) -> float:
    output.unlink(missing_ok=True)
    subprocess.run(["sync"], check=True)
    return _timed(convert_argv(source, "vmdk", output, "qcow2", compress=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        ova, vmdk, member = _build_ova(workdir, int(args.size_gib * 1024) * MiB)
        print(f"streamOptimized vmdk {vmdk.stat().st_size / MiB:.0f} MiB at {member.offset_data}")
        fd = os.open(ova, os.O_RDONLY)
        in_ova = source_filename(
            Path(f"/proc/{os.getpid()}/fd/{fd}"), ByteRange(member.offset_data, member.size)
        )
        unpacked_dir = workdir / "x"
        unpacked_dir.mkdir()
        out = workdir / "out.qcow2"
        times: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            times.setdefault("in OVA", []).append(_convert(in_ova, out))
            compare = ["qemu-img", "compare", "-f", "vmdk", "-F", "qcow2", str(in_ova), str(out)]
            times.setdefault("verify", []).append(_timed(compare))
            times.setdefault("unpacked", []).append(_convert(vmdk, out))
            unpack = _timed(["tar", "-xf", str(ova), "-C", str(unpacked_dir), vmdk.name])
            convert = _convert(unpacked_dir / vmdk.name, out)
            times.setdefault("tar -x + convert", []).append(unpack + convert)
            (unpacked_dir / vmdk.name).unlink()
        os.close(fd)
    for way, seconds in times.items():
        rounds = " ".join(f"{s:6.2f}" for s in seconds)
        print(
            f"{way:18s} best {min(seconds):6.2f} s  median {statistics.median(seconds):6.2f} s"
            f"  ({rounds})"
        )


if __name__ == "__main__":
    main()
