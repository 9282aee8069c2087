"""virtio_initramfs: the virtio drivers are in the guest's initramfs.

The driver configuration is written for each initramfs system the guest uses (dracut
``conf.d``, initramfs-tools ``modules``, mkinitcpio ``MODULES``). The image itself is rebuilt
only by the guest's own tool, run in a chroot, and only when the guest has that tool; otherwise
the report says so and the guest rebuilds it on its next kernel update.
"""

from __future__ import annotations

import re

from agent import proc
from agent.disk.journal import AttachmentJournal
from agent.repair.chroot import chroot_mounts, run_in_guest
from agent.repair.detect import initramfs_binary
from agent.repair.fixes.base import FixContext, Outcome, OutcomeStatus, changed_outcome

ACTION = "virtio_initramfs"
VIRTIO_MODULES = ("virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci")
DRACUT_CONF = "/etc/dracut.conf.d/h2k-virtio.conf"
REGENERATE_TIMEOUT = 1800.0
REGENERATE_ARGV = {
    "dracut": ["--force", "--regenerate-all"],
    "initramfs-tools": ["-u", "-k", "all"],
    "mkinitcpio": ["-P"],
}
_MKINITCPIO_MODULES = re.compile(r"^MODULES=\((?P<list>[^)]*)\)", re.MULTILINE)


def _configure_dracut(ctx: FixContext) -> None:
    drivers = " ".join(VIRTIO_MODULES)
    text = f'# Written by h2k: virtio drivers for KVM.\nadd_drivers+=" {drivers} "\n'
    ctx.changes.write_text(ACTION, DRACUT_CONF, text)


def _configure_initramfs_tools(ctx: FixContext) -> None:
    path = "/etc/initramfs-tools/modules"
    text = ctx.root.read_text(path) or ""
    present = {line.split()[0] for line in text.splitlines() if line.strip() and line[0] != "#"}
    missing = [m for m in VIRTIO_MODULES if m not in present]
    if missing:
        if text and not text.endswith("\n"):
            text += "\n"
        text += "# Added by h2k: virtio drivers for KVM.\n" + "".join(f"{m}\n" for m in missing)
        ctx.changes.write_text(ACTION, path, text)


def _configure_mkinitcpio(ctx: FixContext) -> None:
    path = "/etc/mkinitcpio.conf"
    text = ctx.root.read_text(path) or ""
    match = _MKINITCPIO_MODULES.search(text)
    if match is None:
        text += f"MODULES=({' '.join(VIRTIO_MODULES)})\n"
    else:
        present = match["list"].split()
        wanted = present + [m for m in VIRTIO_MODULES if m not in present]
        text = text[: match.start()] + f"MODULES=({' '.join(wanted)})" + text[match.end() :]
    ctx.changes.write_text(ACTION, path, text)


CONFIGURE = {
    "dracut": _configure_dracut,
    "initramfs-tools": _configure_initramfs_tools,
    "mkinitcpio": _configure_mkinitcpio,
}


async def _regenerate(
    ctx: FixContext, tool: str, journal: AttachmentJournal, can_chroot: bool
) -> dict[str, str]:
    step = {"step": f"regenerate ({tool})"}
    binary = initramfs_binary(ctx.root, tool)
    if binary is None:
        return {**step, "status": OutcomeStatus.SKIPPED, "reason": f"{tool} not present in guest"}
    if ctx.dry_run:
        return {
            **step,
            "status": OutcomeStatus.SKIPPED,
            "reason": f"dry run: would run {binary} in a chroot",
        }
    if not can_chroot:
        return {**step, "status": OutcomeStatus.SKIPPED, "reason": "this node cannot chroot"}
    try:
        async with chroot_mounts(ctx.root, journal):
            await run_in_guest(
                ctx.root, [binary, *REGENERATE_ARGV[tool]], timeout=REGENERATE_TIMEOUT
            )
    except proc.CommandError as exc:
        return {**step, "status": OutcomeStatus.FAILED, "reason": str(exc)}
    return {**step, "status": OutcomeStatus.APPLIED, "reason": f"ran {binary} in the guest"}


async def fix_virtio_initramfs(
    ctx: FixContext, journal: AttachmentJournal, *, can_chroot: bool, regenerate: bool
) -> Outcome:
    """Write the virtio driver configuration; rebuild the initramfs with the guest's tool."""
    tools = ctx.guest.initramfs_tools
    if not tools:
        return Outcome(
            ACTION, OutcomeStatus.SKIPPED, "no initramfs system (dracut, initramfs-tools) found"
        )
    for tool in tools:
        CONFIGURE[tool](ctx)
    outcome = changed_outcome(
        ctx, ACTION, "the virtio drivers are already configured", [f"initramfs: {', '.join(tools)}"]
    )
    for tool in tools:
        if regenerate:
            step = await _regenerate(ctx, tool, journal, can_chroot)
        else:
            step = {
                "step": f"regenerate ({tool})",
                "status": OutcomeStatus.SKIPPED,
                "reason": "not asked",
            }
        outcome.steps.append(step)
        if step["status"] == OutcomeStatus.FAILED:
            outcome.status, outcome.reason = OutcomeStatus.FAILED, step["reason"]
    skipped = [s["reason"] for s in outcome.steps if s["status"] == OutcomeStatus.SKIPPED]
    if skipped and outcome.status != OutcomeStatus.FAILED:
        outcome.reason += "; initramfs not rebuilt: " + "; ".join(skipped)
    return outcome
