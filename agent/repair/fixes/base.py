"""What every fix is given and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agent.repair.changes import ChangeSet
from agent.repair.detect import GuestInfo
from agent.repair.devices import DeviceMap
from agent.repair.guestfs import GuestRoot


class OutcomeStatus(StrEnum):
    """How one repair action ended (the ``status`` of each action in the report)."""

    APPLIED = "applied"
    WOULD_APPLY = "would_apply"  # dry run: the change is recorded, not made
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class FixContext:
    """A mounted guest being repaired."""

    root: GuestRoot
    guest: GuestInfo
    devices: DeviceMap
    changes: ChangeSet
    parameters: dict[str, Any]

    @property
    def dry_run(self) -> bool:
        return self.changes.dry_run


@dataclass
class Outcome:
    """The result of one action: applied / would_apply / skipped / failed, and why."""

    action: str
    status: OutcomeStatus
    reason: str
    notes: list[str] = field(default_factory=list)
    steps: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self, changes: ChangeSet) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "action": self.action,
            "status": self.status,
            "reason": self.reason,
            "files": [c.path for c in changes.for_action(self.action)],
            "seconds": round(self.seconds, 3),
        }
        if self.notes:
            doc["notes"] = self.notes
        if self.steps:
            doc["steps"] = self.steps
        return doc


def changed_outcome(
    ctx: FixContext, action: str, unchanged_reason: str, notes: list[str]
) -> Outcome:
    """applied (or would_apply) when the action changed files, else skipped with a reason."""
    files = ctx.changes.for_action(action)
    if not files:
        return Outcome(action, OutcomeStatus.SKIPPED, unchanged_reason, notes)
    status = OutcomeStatus.WOULD_APPLY if ctx.dry_run else OutcomeStatus.APPLIED
    verb = "would change" if ctx.dry_run else "changed"
    return Outcome(action, status, f"{verb} {len(files)} file(s)", notes)
