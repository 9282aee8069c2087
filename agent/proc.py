"""The one place the agent starts external processes.

Every command runs from an argument list (never a shell), with ``LC_ALL=C``, a timeout, in its
own process group (so cancelling a job kills qemu-img *and* anything it started), optionally
under resource limits. Failures surface as :class:`CommandFailed` / :class:`CommandTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

log = logging.getLogger(__name__)

LineCallback = Callable[[str], None]

KILL_GRACE_SECONDS = 5.0
# How long a process may take to go after SIGKILL before it is left to exit on its own.
KILL_WAIT_SECONDS = 10.0
_REAPERS: set[asyncio.Future[int]] = set()
STDERR_TAIL_LINES = 20
PRLIMIT = "prlimit"  # util-linux, beside losetup and mount: every node that attaches has it
MAX_CAPTURED_STDOUT = 16 * 1024 * 1024
_LINE_SPLIT = re.compile(r"[\r\n]")


class CommandError(Exception):
    """Base of the errors an external command reports."""

    def __init__(self, argv: Sequence[str], message: str) -> None:
        super().__init__(message)
        self.argv = list(argv)


class CommandFailed(CommandError):
    """The command exited with a non-zero status (or could not be started)."""

    def __init__(self, argv: Sequence[str], exit_code: int, stderr_tail: str) -> None:
        tail = stderr_tail.strip() or "(no stderr)"
        super().__init__(argv, f"{argv[0]} exited with status {exit_code}: {tail}")
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class CommandTimeout(CommandError):
    """The command ran longer than its timeout and was killed."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        super().__init__(argv, f"{argv[0]} did not finish within {timeout:g} s and was killed")
        self.timeout = timeout


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    exit_code: int
    stdout: str  # only filled when the caller asked to capture it
    stderr_tail: str


@dataclass(frozen=True)
class ToolRun:
    """One finished command as a job's own log shows it."""

    argv: list[str]
    exit_code: int | None  # None: killed (timeout or cancel)
    seconds: float
    stderr_tail: str


_tool_runs: ContextVar[list[ToolRun] | None] = ContextVar("h2k_tool_runs", default=None)


@contextlib.contextmanager
def recording_tools() -> Iterator[list[ToolRun]]:
    """Collect every command :func:`run` finishes in this context (a job's task)."""
    runs: list[ToolRun] = []
    token = _tool_runs.set(runs)
    try:
        yield runs
    finally:
        _tool_runs.reset(token)


def _record(argv: Sequence[str], exit_code: int | None, started: float, tail: str) -> None:
    runs = _tool_runs.get()
    if runs is not None:
        runs.append(ToolRun(list(argv), exit_code, round(time.monotonic() - started, 3), tail))


def which(name: str) -> str | None:
    """The absolute path of an executable on PATH, or None."""
    return shutil.which(name)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ours, with a fixed C locale so output parses the same."""
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env.pop("LANGUAGE", None)
    if extra:
        env.update(extra)
    return env


def limited_argv(
    argv: Sequence[str], memory_limit_bytes: int | None, cpu_seconds: int | None
) -> list[str]:
    """Prefix argv with ``prlimit`` (util-linux) when limits are asked for.

    The limits are set in the child by an exec shim instead of a ``preexec_fn``: grpc runs
    threads, and forking with a Python callback is unsafe then. ``prlimit`` sets them and
    execs the command in about a millisecond; a Python shim cost ~40 ms of interpreter start
    on every limited tool run (each job's ``qemu-img info`` and ``check``, among others).
    Both the soft and the hard limit are set, so the tool cannot raise them again.
    """
    if memory_limit_bytes is None and cpu_seconds is None:
        return list(argv)
    shim = [PRLIMIT]
    if memory_limit_bytes is not None:
        shim.append(f"--as={memory_limit_bytes}")
    if cpu_seconds is not None:
        shim.append(f"--cpu={cpu_seconds}")
    return [*shim, "--", *argv]


# glibc reserves a 64 MiB heap arena per thread that allocates (up to 8 per CPU), and every
# reservation counts toward RLIMIT_AS: a qemu-img whose I/O threads multiplied under load
# hit its 1 GiB limit with a fraction of it in use and aborted
# ("qemu_thread_create: Resource temporarily unavailable"). Two arenas keep a thread's
# cost to its stack; qemu-img allocates little, so sharing arenas costs it nothing.
LIMITED_MALLOC_ARENAS = "2"


def limited_env(memory_limit_bytes: int | None) -> dict[str, str]:
    """The environment a child with an address-space limit needs (see above)."""
    return {} if memory_limit_bytes is None else {"MALLOC_ARENA_MAX": LIMITED_MALLOC_ARENAS}


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _terminate(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the whole group, wait up to ``grace``, then SIGKILL it, and reap the leader."""
    pgid = process.pid  # start_new_session makes the child its group's leader
    _kill_group(pgid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        log.warning("process group did not exit on SIGTERM pgid=%d; sending SIGKILL", pgid)
    # Members other than the leader (a shell's background children) may still be alive.
    _kill_group(pgid, signal.SIGKILL)
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), KILL_WAIT_SECONDS)
    except TimeoutError:
        # Killed but not gone: stuck in the kernel on a file system that stopped answering
        # (a hard NFS mount, a stopped FUSE daemon). Waiting longer would hold the job (and a
        # cancel) until the server returns; it is reaped whenever it exits.
        log.error(
            "process did not exit after SIGKILL pid=%d (stuck on a hung file system?); "
            "it will be reaped when it exits",
            pgid,
        )
        reaper = asyncio.ensure_future(process.wait())
        _REAPERS.add(reaper)
        reaper.add_done_callback(_REAPERS.discard)


async def _pump(
    stream: asyncio.StreamReader,
    on_line: LineCallback | None,
    tail: deque[str] | None,
    captured: list[str] | None,
) -> None:
    """Read a pipe to EOF, splitting on CR or LF (qemu-img redraws progress with CR)."""
    pending = ""
    size = 0
    while chunk := await stream.read(65536):
        text = chunk.decode("utf-8", errors="replace")
        if captured is not None and size < MAX_CAPTURED_STDOUT:
            captured.append(text)
            size += len(text)
        *lines, pending = _LINE_SPLIT.split(pending + text)
        for line in lines:
            _deliver(line, on_line, tail)
    _deliver(pending, on_line, tail)


def _deliver(line: str, on_line: LineCallback | None, tail: deque[str] | None) -> None:
    if not line.strip():
        return
    if tail is not None:
        tail.append(line)
    if on_line is not None:
        on_line(line)


async def run(
    argv: Sequence[str],
    *,
    timeout: float,
    on_stdout_line: LineCallback | None = None,
    on_stderr_line: LineCallback | None = None,
    capture_stdout: bool = False,
    memory_limit_bytes: int | None = None,
    cpu_seconds: int | None = None,
    env: Mapping[str, str] | None = None,
    grace_seconds: float = KILL_GRACE_SECONDS,
) -> CommandResult:
    """Run a command to completion.

    On timeout or when the calling task is cancelled, the whole process group is sent SIGTERM,
    then SIGKILL after ``grace_seconds``, and reaped before this returns or raises.

    Args:
        argv: program and arguments; never interpreted by a shell.
        timeout: seconds before the command is killed.
        on_stdout_line: called with each stdout line (CR or LF terminated).
        on_stderr_line: called with each stderr line.
        capture_stdout: keep the whole stdout (up to 16 MiB) in the result.
        memory_limit_bytes: RLIMIT_AS for the child.
        cpu_seconds: RLIMIT_CPU for the child.
        env: extra environment variables.
        grace_seconds: time between SIGTERM and SIGKILL.

    Returns:
        The exit code, captured stdout and the tail of stderr.

    Raises:
        CommandFailed: non-zero exit, or the program could not be started.
        CommandTimeout: the command outlived ``timeout``.
        asyncio.CancelledError: the caller was cancelled (after the group was killed).
    """
    full_argv = limited_argv(argv, memory_limit_bytes, cpu_seconds)
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *full_argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env({**limited_env(memory_limit_bytes), **(env or {})}),
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandFailed(argv, 127, str(exc)) from exc
    log.debug("started pid=%d argv=%s", process.pid, " ".join(argv))
    assert process.stdout is not None and process.stderr is not None
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    captured: list[str] | None = [] if capture_stdout else None
    pumps = asyncio.gather(
        _pump(process.stdout, on_stdout_line, None, captured),
        _pump(process.stderr, on_stderr_line, tail, None),
    )
    try:
        async with asyncio.timeout(timeout):
            await pumps
            exit_code = await process.wait()
    except TimeoutError:
        await _terminate(process, grace_seconds)
        _record(argv, None, started, "\n".join(tail))
        raise CommandTimeout(argv, timeout) from None
    except BaseException:
        await _terminate(process, grace_seconds)
        _record(argv, None, started, "\n".join(tail))
        raise
    finally:
        pumps.cancel()
    stderr_tail = "\n".join(tail)
    _record(argv, exit_code, started, stderr_tail)
    if exit_code != 0:
        raise CommandFailed(argv, exit_code, stderr_tail)
    return CommandResult(list(argv), exit_code, "".join(captured or []), stderr_tail)


def run_sync(argv: Sequence[str], *, timeout: float = 10.0) -> CommandResult:
    """Run a short command (a probe) synchronously and capture its output.

    Raises:
        CommandFailed: non-zero exit, or the program could not be started.
        CommandTimeout: the command outlived ``timeout`` (its process group is killed).
    """
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandFailed(argv, 127, str(exc)) from exc
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid, signal.SIGKILL)
        process.communicate()
        raise CommandTimeout(argv, timeout) from None
    stdout = out.decode("utf-8", errors="replace")
    stderr_tail = "\n".join(err.decode("utf-8", errors="replace").splitlines()[-STDERR_TAIL_LINES:])
    if process.returncode != 0:
        raise CommandFailed(argv, process.returncode, stderr_tail)
    return CommandResult(list(argv), process.returncode, stdout, stderr_tail)
