"""qemu-storage-daemon FUSE exports: any image format seen as a raw file.

The daemon stays a child of the agent (never ``--daemonize``: a daemon re-parented to an init
that does not reap would linger as a zombie). It is stopped with SIGINT, on which it removes
its FUSE mount; SIGTERM (what a cancelled command gets) leaves a stale mount behind, so the
mount point is always unmounted afterwards as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

from agent import proc
from agent.disk.cleanup import release_fully
from agent.disk.journal import AttachmentJournal
from agent.disk.mount import is_mounted, unmount
from agent.errors import ToolFailed

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
STOP_GRACE_SECONDS = 10.0
POLL_SECONDS = 0.05
START_POLL_SECONDS = 0.002
BINARY = "qemu-storage-daemon"


def export_argv(
    image: Path,
    fmt: str,
    mountpoint: Path,
    pidfile: Path,
    writable: bool,
    discard: bool = False,
) -> list[str]:
    """The daemon's command line; JSON options so no path needs qemu's comma escaping.

    Args:
        discard: pass the guest's discards down (a hole punched in the export frees the
            image's clusters; in an overlay they become zero clusters over the backing).
            Without it qemu ignores them. Only for a writable export.
    """
    read_only = not writable
    file_node: dict[str, object] = {"driver": "file", "node-name": "file0", "filename": str(image)}
    format_node: dict[str, object] = {"driver": fmt, "node-name": "disk0", "file": "file0"}
    if discard and writable:
        file_node["discard"] = format_node["discard"] = "unmap"
    export = {
        "type": "fuse",
        "id": "export0",
        "node-name": "disk0",
        "mountpoint": str(mountpoint),
        "writable": writable,
    }
    return [
        BINARY,
        "--blockdev",
        json.dumps({**file_node, "read-only": read_only}),
        "--blockdev",
        json.dumps({**format_node, "read-only": read_only}),
        "--export",
        json.dumps(export),
        "--pidfile",
        str(pidfile),
    ]


def _daemon_pid(pidfile: Path, mountpoint: Path) -> int | None:
    """The pid in ``pidfile`` if that process is still our daemon for ``mountpoint``."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    # After a crash the pid may belong to someone else by now.
    if not cmdline or os.path.basename(cmdline[0]) != BINARY.encode():
        return None
    if not any(str(mountpoint).encode() in arg for arg in cmdline):
        return None
    return pid


def _exited(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _wait_exit(pid: int, seconds: float) -> bool:
    """Wait (blocking, in a release thread) for a process we signalled to exit.

    A pidfd becomes readable the moment the process exits, so a daemon that shuts down in
    5 ms costs 5 ms, not a polling interval; without pidfds (Linux < 5.3) it polls.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (OSError, AttributeError):
        fd = None
    if fd is not None:
        try:
            select.select([fd], [], [], seconds)
        finally:
            os.close(fd)
        return _exited(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _exited(pid):
            return True
        time.sleep(POLL_SECONDS)  # polling a process we signalled, in a release thread
    return _exited(pid)


def stop_daemon(pidfile: Path, mountpoint: Path) -> None:
    """Stop the daemon exporting ``mountpoint`` and remove the export (blocking).

    SIGINT first (a clean shutdown removes the FUSE mount), SIGKILL after a grace period, then
    the mount point is unmounted if it is still mounted and the files are removed.
    """
    pid = _daemon_pid(pidfile, mountpoint)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        if not _wait_exit(pid, STOP_GRACE_SECONDS):
            log.warning("storage daemon ignored SIGINT pid=%d; killing it", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, STOP_GRACE_SECONDS)
    unmount(mountpoint)
    for path in (pidfile, mountpoint):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _wait_exported(mountpoint: Path, daemon: asyncio.Task[proc.CommandResult]) -> None:
    """Poll until the daemon's FUSE mount appears: every 2 ms at first (the daemon is
    usually up in tens of ms, and each attach waits for it), backing off to POLL_SECONDS."""
    deadline = time.monotonic() + START_TIMEOUT
    interval = START_POLL_SECONDS
    while not is_mounted(mountpoint):
        if daemon.done():
            try:
                daemon.result()
            except proc.CommandError as exc:
                raise ToolFailed(f"{BINARY} could not export the image: {exc}") from exc
            raise ToolFailed(f"{BINARY} exited before exporting the image")
        if time.monotonic() > deadline:
            raise ToolFailed(f"{BINARY} did not export the image within {START_TIMEOUT:g} s")
        await asyncio.sleep(interval)
        interval = min(POLL_SECONDS, interval * 2)


@contextlib.asynccontextmanager
async def fuse_export(
    image: Path,
    fmt: str,
    workdir: Path,
    journal: AttachmentJournal,
    *,
    writable: bool,
    timeout: float,
    name: str = "export",
    discard: bool = False,
) -> AsyncIterator[Path]:
    """Export ``image`` (qemu driver ``fmt``) as a raw file ``<name>.raw`` under ``workdir``.

    Several exports share a work directory when each has its own ``name``. With ``discard``
    (writable only) a hole punched in the raw file is passed to the image (see
    :func:`export_argv`).

    Yields:
        The raw file (a FUSE mount point), valid for the body.

    Raises:
        ToolFailed: the daemon could not start or export the image.
    """
    mountpoint = workdir / f"{name}.raw"
    pidfile = workdir / f"{name}.pid"
    mountpoint.touch()
    record = journal.add(
        {"kind": "fuse_export", "mountpoint": str(mountpoint), "pidfile": str(pidfile)}
    )
    argv = export_argv(image, fmt, mountpoint, pidfile, writable, discard)
    daemon = asyncio.create_task(proc.run(argv, timeout=timeout), name=f"qsd-{mountpoint}")
    try:
        await _wait_exported(mountpoint, daemon)
        log.info("image exported image=%s format=%s export=%s", image, fmt, mountpoint)
        yield mountpoint
    finally:
        await release_fully(lambda: stop_daemon(pidfile, mountpoint))
        if not daemon.done():
            daemon.cancel()  # never started far enough to write its pid: kill its group
        await asyncio.wait([daemon], timeout=STOP_GRACE_SECONDS * 2)
        if daemon.done() and not daemon.cancelled():
            daemon.exception()  # its exit status after SIGINT/SIGKILL is of no interest
        await release_fully(lambda: stop_daemon(pidfile, mountpoint))
        journal.remove(record)
