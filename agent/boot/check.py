"""Boot a guest's disks once under QEMU through throwaway overlays and say whether it booted.

The disks are never written: each gets a qcow2 overlay in the job's scratch directory (QEMU
opens the backing file read-only) and the overlays are deleted on every way out. QEMU runs
through :mod:`agent.proc` (its own process group, a timeout, memory and CPU limits), so a
cancelled job kills it. The verdict comes from :mod:`agent.boot.verdict`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent import proc
from agent.boot.machine import (
    GUEST_MEMORY_MIB,
    BootDisk,
    FirmwareMissing,
    Machine,
    choose_accelerator,
    prepare_firmware,
    qemu_argv,
)
from agent.boot.qmp import Qmp, QmpError
from agent.boot.verdict import BootResult, BootWatch, Observation, screen_text
from agent.errors import CapabilityMissing, ToolFailed

log = logging.getLogger(__name__)

DEFAULT_TIME_LIMIT = 300.0
POLL_SECONDS = 1.0
QMP_CONNECT_SECONDS = 30.0
LOG_TAIL_BYTES = 64 * 1024
# QEMU's own address space beyond the guest's RAM (TCG's translation cache, libraries, threads).
QEMU_OVERHEAD_BYTES = 3 * 1024**3
VGA_TEXT = (0xB8000, 4000)  # 80 x 25 characters with their attributes

ProgressCallback = Callable[[float, str], None]


@dataclass(frozen=True)
class GuestDisk:
    """One disk of the guest: the image to boot (never written) and its format."""

    path: Path
    format: str


async def _make_overlay(disk: GuestDisk, overlay: Path) -> None:
    argv = [
        "qemu-img", "create", "-q", "-f", "qcow2",
        "-b", str(disk.path.resolve()), "-F", disk.format, str(overlay),
    ]  # fmt: skip
    await proc.run(argv, timeout=60)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - LOG_TAIL_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


async def _connect(machine: Machine, qemu: asyncio.Task[proc.CommandResult]) -> Qmp:
    deadline = time.monotonic() + QMP_CONNECT_SECONDS
    while True:
        if qemu.done():
            qemu.result()  # raises CommandFailed with QEMU's stderr
            raise ToolFailed("QEMU exited before its monitor came up", phase="boot_check")
        if machine.qmp_socket.exists():
            with contextlib.suppress(OSError):
                return await Qmp.connect(machine.qmp_socket)
        if time.monotonic() > deadline:
            raise ToolFailed("QEMU's monitor did not come up", phase="boot_check")
        await asyncio.sleep(0.2)  # polling for the socket, with a deadline


async def _observe(qmp: Qmp, machine: Machine, elapsed: float) -> Observation:
    stats = await qmp.execute("query-blockstats")
    ours = [s["stats"] for s in stats if str(s.get("device", "")).startswith("disk")]
    screen = ""
    if machine.firmware == "bios":
        address, size = VGA_TEXT
        await qmp.execute("pmemsave", val=address, size=size, filename=str(machine.screen_dump))
        screen = screen_text(machine.screen_dump.read_bytes())
    return Observation(
        elapsed=elapsed,
        firmware_log=_tail(machine.firmware_log),
        serial=_tail(machine.serial_log),
        screen=screen,
        reads=sum(s.get("rd_operations", 0) for s in ours),
        writes=sum(s.get("wr_operations", 0) for s in ours),
    )


async def _watch(
    machine: Machine,
    qemu: asyncio.Task[proc.CommandResult],
    time_limit: float,
    on_progress: ProgressCallback,
) -> BootResult:
    started = time.monotonic()
    watch = BootWatch(machine.firmware, machine.accelerator)
    qmp = await _connect(machine, qemu)
    last = Observation(0.0)
    try:
        while True:
            elapsed = time.monotonic() - started
            if qemu.done():
                return watch.guest_stopped(last, _stop_reason(qemu))
            try:
                last = await _observe(qmp, machine, elapsed)
            except QmpError:
                await asyncio.sleep(0.5)  # QEMU is going away: let the task finish
                if qemu.done():
                    continue
                raise
            if (verdict := watch.observe(last)) is not None:
                return verdict
            if elapsed >= time_limit:
                return watch.at_time_limit(last, time_limit)
            on_progress(
                elapsed / time_limit,
                f"{machine.accelerator}: {elapsed:.0f} s, "
                f"{last.reads} disk reads, {last.writes} writes",
            )
            await asyncio.sleep(POLL_SECONDS)  # the guest's pace: sample once a second
    finally:
        await qmp.close()


def _stop_reason(qemu: asyncio.Task[proc.CommandResult]) -> str:
    exc = qemu.exception()
    if exc is None:
        return "QEMU exited: the guest reset or powered off"
    return f"QEMU stopped: {exc}"


async def _stop(qemu: asyncio.Task[proc.CommandResult]) -> None:
    """Kill QEMU's process group (proc.run does, when its task is cancelled) and reap it."""
    if not qemu.done():
        qemu.cancel()
    with contextlib.suppress(asyncio.CancelledError, proc.CommandError):
        await qemu


def _remove(workdir: Path) -> None:
    # Only the files this check made, then rmdir: never a recursive delete.
    for child in workdir.iterdir():
        with contextlib.suppress(OSError):
            child.unlink()
    with contextlib.suppress(OSError):
        workdir.rmdir()


async def boot_check(
    disks: Sequence[GuestDisk],
    firmware: str,
    workdir: Path,
    *,
    time_limit: float = DEFAULT_TIME_LIMIT,
    on_progress: ProgressCallback | None = None,
) -> BootResult:
    """Boot ``disks`` (the first is the boot disk) once and decide whether the guest booted.

    Args:
        disks: the guest's disks, never written (each is the backing file of an overlay).
        firmware: "bios" (SeaBIOS) or "uefi" (OVMF with fresh variables).
        workdir: a directory of this check's own (created, and removed on return).
        time_limit: seconds of booting before the verdict is ``hung``.
        on_progress: called about once a second with the fraction of the time limit used.

    Raises:
        CapabilityMissing: the firmware is not installed.
        ToolFailed: QEMU could not be started or its monitor failed.
        asyncio.CancelledError: after QEMU was killed and the overlays removed.
    """
    workdir.mkdir(parents=True, exist_ok=False)
    try:
        overlays = []
        for index, disk in enumerate(disks):
            overlay = workdir / f"overlay{index}.qcow2"
            await _make_overlay(disk, overlay)
            overlays.append(BootDisk(overlay))
        accelerator = await choose_accelerator(workdir)
        machine = Machine(workdir, firmware, accelerator, overlays)
        try:
            prepare_firmware(machine)
        except FirmwareMissing as exc:
            raise CapabilityMissing(str(exc), phase="boot_check") from None
        memory = GUEST_MEMORY_MIB * 1024 * 1024 + QEMU_OVERHEAD_BYTES
        qemu = asyncio.create_task(
            proc.run(
                qemu_argv(machine),
                timeout=time_limit + 60,
                memory_limit_bytes=memory,
                cpu_seconds=int(2 * (time_limit + 60)),
                grace_seconds=2.0,
            )
        )
        log.info("boot check started firmware=%s accel=%s disks=%d", firmware, accelerator,
                 len(disks))  # fmt: skip
        try:
            result = await _watch(machine, qemu, time_limit, on_progress or (lambda f, m: None))
        except proc.CommandError as exc:
            raise ToolFailed(f"the boot check's QEMU failed: {exc}", phase="boot_check") from None
        finally:
            await _stop(qemu)
    finally:
        _remove(workdir)
    log.info("boot check result=%s stage=%s seconds=%.1f", result.result,
             result.stage, result.seconds)  # fmt: skip
    return result
