"""After a crash: stop the tools a killed agent left running on its temporary outputs.

Every external tool runs in its own process group (see :mod:`agent.proc`), so a ``kill -9`` of
the agent leaves, say, a ``qemu-img convert`` writing on. The temporary outputs of the jobs
that were running are journaled (:mod:`agent.disk.atomic`); a process whose command line
names one of them is such an orphan. It is killed with its group before the temporary files
are removed, so nothing writes into a file the next attempt may create again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from agent.disk.atomic import JOURNAL_DIR

log = logging.getLogger(__name__)

PROC = Path("/proc")
EXIT_WAIT_SECONDS = 5.0


def journaled_temporaries(state_dir: Path) -> list[Path]:
    """The temporary outputs recorded as in flight under ``state_dir``."""
    journal = state_dir / JOURNAL_DIR
    if not journal.is_dir():
        return []
    paths = []
    for entry in sorted(journal.iterdir()):
        with contextlib.suppress(OSError):
            paths.append(Path(entry.read_text().strip()))
    return paths


def _command_line(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []  # gone meanwhile, or not ours to read
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _parent(pid: int) -> int:
    try:
        return int((PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _belongs_to_live_agent(pid: int) -> bool:
    """A tool whose parent is a running agent is that agent's (another agent may share the
    output directory and, for the same job, the temporary name)."""
    return any("h2k-agent" in arg for arg in _command_line(_parent(pid)))


def processes_writing(paths: Iterable[Path]) -> list[int]:
    """Orphaned processes (no live agent as parent) whose command line names one of ``paths``."""
    wanted = {str(p) for p in paths}
    if not wanted:
        return []
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = _command_line(int(entry.name))
        names_one = any(arg in wanted or arg.split(":", 1)[-1] in wanted for arg in argv)
        if names_one and not _belongs_to_live_agent(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill_orphans(state_dir: Path) -> list[int]:
    """Kill (SIGKILL, whole group) the tools still writing journaled temporary outputs.

    Returns:
        The pids killed; each is gone (or a zombie of someone else) when this returns.
    """
    return kill_processes_naming(journaled_temporaries(state_dir))


def kill_processes_naming(paths: Iterable[Path]) -> list[int]:
    """Kill (SIGKILL, whole group) the orphaned tools whose command line names one of
    ``paths`` (a crashed repair's overlay that a copy pass still reads, say).

    Returns:
        The pids killed; each is gone (or a zombie of someone else) when this returns.
    """
    pids = processes_writing(paths)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        log.warning("killed orphaned tool of a previous agent run pid=%d", pid)
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)  # a killed process takes a moment to go; bounded by the deadline
    return pids


def _alive(pid: int) -> bool:
    try:
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
