"""The attachment journal: what a job has attached, kept in the agent's state directory.

Every loop device, mount, FUSE export and overlay file is recorded *before* it is created and
forgotten after it is released, so an agent that crashed can release what it left behind when
it starts again (:mod:`agent.disk.leftovers`). One JSON file per job, rewritten atomically.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

JOURNAL_DIR = "attachments"

Record = dict[str, Any]


def journal_dir(state_dir: Path) -> Path:
    return state_dir / JOURNAL_DIR


class AttachmentJournal:
    """Ordered records of one job's attachments; release happens in reverse order."""

    def __init__(self, state_dir: Path, job_id: str) -> None:
        self.path = journal_dir(state_dir) / f"{job_id}.json"
        self._records: list[Record] = []
        self._next_id = 0
        self._lock = threading.Lock()  # release steps run in worker threads

    def add(self, record: Record) -> int:
        """Record an attachment about to be made; returns its id (for update/remove)."""
        with self._lock:
            self._next_id += 1
            self._records.append({"id": self._next_id, **record})
            self._save()
            return self._next_id

    def update(self, record_id: int, **fields: Any) -> None:
        """Add what became known once the attachment exists (a loop device's name)."""
        with self._lock:
            for record in self._records:
                if record["id"] == record_id:
                    record.update(fields)
            self._save()

    def remove(self, record_id: int) -> None:
        """Forget a released attachment; the file goes away with the last record."""
        with self._lock:
            self._records = [r for r in self._records if r["id"] != record_id]
            self._save()

    def _save(self) -> None:
        if not self._records:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(self._records, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def read_journals(state_dir: Path) -> dict[Path, list[Record]]:
    """Every journal left in the state directory, by file (unreadable ones are empty)."""
    found: dict[Path, list[Record]] = {}
    directory = journal_dir(state_dir)
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.json")):
        try:
            records = json.loads(path.read_text())
        except (OSError, ValueError):
            records = []
        found[path] = [r for r in records if isinstance(r, dict)]
    return found
