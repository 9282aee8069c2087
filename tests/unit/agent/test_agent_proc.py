"""The subprocess helper: process groups, timeouts, typed errors, limits, line splitting."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from agent import proc


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _wait_until(condition, deadline_seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _find_group_of(marker: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline and cmdline.startswith("sh"):
                return os.getpgid(int(entry.name))
    return None


def test_cancel_kills_the_whole_process_group() -> None:
    marker = f"sleep 60 & sleep 61 # {os.getpid()}-{time.monotonic_ns()}"

    async def scenario() -> int:
        task = asyncio.create_task(proc.run(["sh", "-c", marker], timeout=120, grace_seconds=2))
        pgid = None
        deadline = time.monotonic() + 10
        while pgid is None or len(_group_members(pgid)) < 3:
            assert time.monotonic() < deadline, "the shell and its two sleeps never appeared"
            await asyncio.sleep(0.05)
            pgid = pgid or _find_group_of(marker)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pgid

    pgid = asyncio.run(scenario())
    assert _wait_until(lambda: not _group_members(pgid)), _group_members(pgid)


def test_timeout_raises_and_kills() -> None:
    started = time.monotonic()
    with pytest.raises(proc.CommandTimeout, match=r"did not finish within 0\.5 s"):
        asyncio.run(proc.run(["sleep", "30"], timeout=0.5, grace_seconds=1))
    assert time.monotonic() - started < 5


def test_failure_carries_exit_code_and_stderr_tail() -> None:
    argv = ["sh", "-c", "echo first >&2; echo 'the reason' >&2; exit 3"]
    with pytest.raises(proc.CommandFailed) as exc:
        asyncio.run(proc.run(argv, timeout=10))
    assert exc.value.exit_code == 3
    assert exc.value.stderr_tail.splitlines()[-1] == "the reason"


def test_missing_program_is_a_command_failure() -> None:
    with pytest.raises(proc.CommandFailed):
        asyncio.run(proc.run(["/nonexistent/tool"], timeout=5))
    with pytest.raises(proc.CommandFailed):
        proc.run_sync(["/nonexistent/tool"])


def test_lines_split_on_carriage_returns_and_locale_is_c() -> None:
    lines: list[str] = []
    argv = ["sh", "-c", "printf 'a\\rb\\r\\nc'; echo \"$LC_ALL\""]
    asyncio.run(proc.run(argv, timeout=10, on_stdout_line=lines.append))
    assert lines == ["a", "b", "cC"]


def test_rlimits_apply_in_the_child() -> None:
    result = asyncio.run(
        proc.run(
            ["sh", "-c", "ulimit -v; ulimit -t"],
            timeout=10,
            capture_stdout=True,
            memory_limit_bytes=512 * 1024 * 1024,
            cpu_seconds=7,
        )
    )
    assert result.stdout.split() == [str(512 * 1024), "7"]


def test_run_sync_captures_output_and_times_out() -> None:
    assert proc.run_sync(["echo", "hi"]).stdout == "hi\n"
    with pytest.raises(proc.CommandTimeout):
        proc.run_sync(["sleep", "30"], timeout=0.3)


def test_a_child_with_a_memory_limit_shares_malloc_arenas() -> None:
    """Each glibc arena reserves address space the limit counts: two are enough."""
    limited = asyncio.run(
        proc.run(
            ["sh", "-c", "echo ${MALLOC_ARENA_MAX:-unset}"],
            timeout=10,
            capture_stdout=True,
            memory_limit_bytes=512 * 1024 * 1024,
        )
    )
    plain = asyncio.run(
        proc.run(["sh", "-c", "echo ${MALLOC_ARENA_MAX:-unset}"], timeout=10, capture_stdout=True)
    )
    assert limited.stdout.strip() == "2"
    assert plain.stdout.strip() == "unset"
