"""Release what a crashed agent left attached, before it takes new work: mounts, loop
devices, FUSE exports, and the overlays a repair wrote into."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from agent import proc
from agent.disk.journal import Record, read_journals
from agent.disk.loop import detach, loops_backed_by
from agent.disk.mount import unmount
from agent.disk.overlay import KIND as OVERLAY
from agent.disk.overlay import release_record as release_overlay
from agent.disk.storage_daemon import stop_daemon
from agent.recovery import kill_processes_naming

log = logging.getLogger(__name__)


def _release(record: Record) -> None:
    kind = record.get("kind")
    if kind == "mount":
        unmount(Path(record["target"]))
    elif kind == "loop":
        backing = str(record["backing"])
        device = record.get("device")
        offset = record.get("offset")
        for candidate in [device] if device else loops_backed_by(backing, offset):
            detach(candidate, backing)
    elif kind == "fuse_export":
        stop_daemon(Path(record["pidfile"]), Path(record["mountpoint"]))
    elif kind == OVERLAY:
        # Recorded before the export over it, so released after it (newest first); a copy
        # pass of the crashed job may still be reading it.
        kill_processes_naming([Path(record["path"])])
        release_overlay(record)
    else:
        log.warning("unknown attachment record kind=%s", kind)


def release_leftovers(state_dir: Path) -> int:
    """Release every attachment recorded in the state directory, newest first.

    A record that cannot be released is logged and kept, so the next start tries again.

    Returns:
        How many attachments were released.
    """
    released = 0
    for path, records in read_journals(state_dir).items():
        kept = []
        for record in reversed(records):
            try:
                _release(record)
                released += 1
                log.info("released leftover attachment journal=%s record=%s", path.name, record)
            except (proc.CommandError, OSError, KeyError, TypeError, ValueError) as exc:
                log.error("cannot release leftover record=%s error=%s", record, exc)
                kept.append(record)
        if kept:
            path.write_text(json.dumps(list(reversed(kept))))
        else:
            path.unlink(missing_ok=True)
    return released
