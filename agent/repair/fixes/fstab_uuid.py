"""fstab_uuid: /etc/fstab and /etc/crypttab device names → ``UUID=`` (where resolvable)."""

from __future__ import annotations

from agent.repair.devices import is_stable
from agent.repair.fixes.base import FixContext, Outcome, OutcomeStatus, changed_outcome
from agent.repair.fstab import TabEntry, parse_crypttab, parse_fstab, replace_column

ACTION = "fstab_uuid"


def _rewrite(
    ctx: FixContext, text: str, entries: list[TabEntry], column: int, label: str
) -> tuple[str, list[str]]:
    notes = []
    for entry in entries:
        if is_stable(entry.spec) or not entry.spec.startswith("/dev/"):
            continue
        resolution = ctx.devices.resolve(entry.spec, entry.fstype)
        where = entry.mountpoint or "?"
        if resolution.uuid_spec is None:
            notes.append(f"{label}: left {entry.spec} ({where}): {resolution.reason}")
            continue
        text = replace_column(text, entry.line_index, column, resolution.uuid_spec)
        notes.append(f"{label}: {entry.spec} ({where}) -> {resolution.uuid_spec}")
    return text, notes


def fix_fstab_uuid(ctx: FixContext) -> Outcome:
    """Rewrite resolvable device names in fstab (column 1) and crypttab (column 2)."""
    notes: list[str] = []
    fstab = ctx.root.read_text("/etc/fstab")
    if fstab is None:
        return Outcome(ACTION, OutcomeStatus.SKIPPED, "the guest has no /etc/fstab")
    new, found = _rewrite(ctx, fstab, parse_fstab(fstab), 0, "fstab")
    notes += found
    ctx.changes.write_text(ACTION, "/etc/fstab", new)
    crypttab = ctx.root.read_text("/etc/crypttab")
    if crypttab is not None:
        new, found = _rewrite(ctx, crypttab, parse_crypttab(crypttab), 1, "crypttab")
        notes += found
        ctx.changes.write_text(ACTION, "/etc/crypttab", new)
    return changed_outcome(ctx, ACTION, "every device reference is already stable", notes)
