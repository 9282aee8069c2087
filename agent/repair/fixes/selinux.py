"""selinux_relabel: an SELinux guest relabels itself on its first boot.

Edited files lose their SELinux labels (they are written from outside the guest), so an
SELinux guest must be relabelled: ``/.autorelabel`` schedules that for the first boot. When the
job asks for SELinux tools (``capability_requirements.needs_selinux_tools``) and the node has
``setfiles``, the relabel is done right away instead.
"""

from __future__ import annotations

from agent import proc
from agent.repair.fixes.base import FixContext, Outcome, OutcomeStatus, changed_outcome

ACTION = "selinux_relabel"
SETFILES_TIMEOUT = 3600.0


async def fix_selinux_relabel(ctx: FixContext, use_node_tools: bool) -> Outcome:
    mode = ctx.guest.selinux
    if mode is None:
        return Outcome(ACTION, OutcomeStatus.SKIPPED, "the guest has no SELinux configuration")
    if mode == "disabled":
        return Outcome(ACTION, OutcomeStatus.SKIPPED, "SELinux is disabled in the guest")
    notes: list[str] = [f"SELinux is {mode} in the guest"]
    if use_node_tools and not ctx.dry_run:
        failure = await _relabel_now(ctx, notes)
        if failure:
            return Outcome(ACTION, OutcomeStatus.FAILED, failure, notes)
    ctx.changes.write_text(ACTION, "/.autorelabel", "")
    return changed_outcome(ctx, ACTION, "a relabel is already scheduled", notes)


async def _relabel_now(ctx: FixContext, notes: list[str]) -> str:
    """Relabel with the node's setfiles; returns a failure reason, or '' on success."""
    setfiles = proc.which("setfiles")
    if setfiles is None:
        return "the job asked for SELinux tools but setfiles is not on this node"
    policy = "targeted"
    text = ctx.root.read_text("/etc/selinux/config") or ""
    for line in text.splitlines():
        if line.strip().startswith("SELINUXTYPE="):
            policy = line.split("=", 1)[1].strip().strip('"')
    contexts = ctx.root.resolve(f"/etc/selinux/{policy}/contexts/files/file_contexts")
    root = str(ctx.root.host_root)
    argv = [setfiles, "-r", root, str(contexts), root]
    try:
        await proc.run(argv, timeout=SETFILES_TIMEOUT)
    except proc.CommandError as exc:
        return f"setfiles failed: {exc}"
    notes.append("relabelled now with the node's setfiles")
    return ""
