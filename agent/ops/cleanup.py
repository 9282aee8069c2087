"""The migration_cleanup operation: remove a failed migration's staged outputs.

Only names listed in ``parameters.migration.staged`` are considered, only inside the checked
``artifacts.output_path``, and only when the name is this migration's staged name
(``.<final>.h2k-<migration id>``), is a regular file (never a symlink, never followed: the
names are looked at and removed relative to the directory's descriptor) and belongs to the
agent's user. Anything else listed is left alone and reported as skipped, with the reason.

The agent's own temporary files of those outputs (``.<staged>.h2k-tmp-<job id>``, see
:func:`agent.disk.atomic.temporary_name`) are removed too, unless a job on this agent is
still writing them (they are in its in-flight journal). Atomic outputs remove their temporary
file on failure and cancellation, and a restarted agent removes its leftovers, so these are
only found after a crash of another agent sharing the directory.

Removing what is already gone is success, so a retry reports the names as absent. Result
details: ``removed``, ``absent`` and ``skipped`` (``{"name", "reason"}``).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

from agent.disk.atomic import inflight_temporaries
from agent.disk.output_dir import OutputDir, opened_output_dir
from agent.errors import InvalidSpec
from agent.ops.base import JobContext, OpResult
from protocol.errors import InvalidArgument
from protocol.migration_jobs import cleanup_parameters

TEMPORARY_MARKER = ".h2k-tmp-"


@dataclass
class CleanupReport:
    removed: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def details(self, migration_id: str) -> dict[str, Any]:
        return {
            "migration_id": migration_id,
            "removed": self.removed,
            "absent": self.absent,
            "skipped": self.skipped,
        }


def is_staged_name(name: str, migration_id: str) -> bool:
    """Whether ``name`` has the form of migration ``migration_id``'s staged outputs."""
    return name.startswith(".") and name.endswith(f".h2k-{migration_id}")


def file_refusal(st: os.stat_result) -> str | None:
    """Why an existing name (``st``: its lstat) must not be removed, or None when it may."""
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by the agent"
    return None


async def run_cleanup(ctx: JobContext) -> OpResult:
    """Remove the listed staged outputs; see the module docstring."""
    try:
        params = cleanup_parameters(ctx.spec)
    except InvalidArgument as exc:
        raise InvalidSpec(exc.message, phase="start") from None
    ctx.progress.report("cleanup", 0, message=f"cleaning up migration {params.migration_id}")
    report = CleanupReport()
    listed = list(dict.fromkeys(params.staged))
    ours = [name for name in listed if is_staged_name(name, params.migration_id)]
    with opened_output_dir(ctx.policy, ctx.output_dir) as out:
        for name in listed:
            if name in ours:
                _remove(out, name, report)
            else:
                reason = f"not a staged name of migration {params.migration_id}"
                report.skipped.append({"name": name, "reason": reason})
        in_use = {p.name for p in inflight_temporaries(ctx.state_dir) if p.parent == out.path}
        for name in _temporaries(out, ours):
            if name in in_use:
                report.skipped.append({"name": name, "reason": "a running job writes it"})
            else:
                _remove(out, name, report)
    ctx.progress.report("cleanup", 100, message=f"removed {len(report.removed)} files")
    return OpResult(details=report.details(params.migration_id))


def _remove(out: OutputDir, name: str, report: CleanupReport) -> None:
    st = out.lstat(name)
    if st is None:
        report.absent.append(name)
        return
    reason = file_refusal(st)
    if reason is not None:
        report.skipped.append({"name": name, "reason": reason})
        return
    try:
        out.unlink(name)
    except FileNotFoundError:
        report.absent.append(name)
        return
    report.removed.append(name)


def _temporaries(out: OutputDir, staged: list[str]) -> list[str]:
    """Names in the directory that are temporary files of the listed staged outputs."""
    prefixes = tuple(f".{name}{TEMPORARY_MARKER}" for name in staged)
    if not prefixes:
        return []
    return sorted(name for name in os.listdir(out.fd) if name.startswith(prefixes))
