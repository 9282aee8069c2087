"""Run a repair plan on a VM's attached disks: fsck, mount, each fix, initramfs; collect
outcomes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.disk.attach import AttachedDisk, AttachedPartition
from agent.disk.journal import AttachmentJournal
from agent.guest.inspection import describe_guest_into
from agent.repair import actions as A
from agent.repair.changes import ChangeSet
from agent.repair.fixes.base import (
    FixContext,
    Outcome,
    OutcomeStatus,
)
from agent.repair.fixes.boot_root import fix_grub_root_uuid
from agent.repair.fixes.fstab_uuid import fix_fstab_uuid
from agent.repair.fixes.initramfs import fix_virtio_initramfs
from agent.repair.fixes.network import fix_network_cleanup
from agent.repair.fixes.selinux import fix_selinux_relabel
from agent.repair.fixes.uefi_fallback import fix_uefi_fallback, fix_uefi_fallback_unmounted
from agent.repair.fixes.vmware_tools import fix_remove_vmware_tools
from agent.repair.fsck import FsckResult, check_filesystem
from agent.repair.guestfs import GuestPathError
from agent.repair.mounting import MountedGuest, mount_guest
from agent.repair.phases import PhaseClock
from agent.repair.reclaim import MountedFilesystem, TrimResult, trim_filesystems

FILE_FIXES = {
    A.FSTAB_UUID: fix_fstab_uuid,
    A.GRUB_ROOT_UUID: fix_grub_root_uuid,
    A.UEFI_FALLBACK: fix_uefi_fallback,
    A.NETWORK_CLEANUP: fix_network_cleanup,
    A.REMOVE_VMWARE_TOOLS: fix_remove_vmware_tools,
}


@dataclass(frozen=True)
class NodeAbilities:
    can_chroot: bool
    use_selinux_tools: bool


@dataclass
class RepairOutcome:
    """Everything the report needs from one run."""

    fsck: list[FsckResult] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    guest: dict[str, Any] | None = None
    changes: ChangeSet | None = None
    disks: list[dict[str, Any]] = field(default_factory=list)
    guest_info: dict[str, Any] | None = None  # parameters.guest_info: as found, before fixes
    trims: list[TrimResult] = field(default_factory=list)
    boot_check: dict[str, Any] | None = None  # agent.boot's verdict, when the job asked

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == OutcomeStatus.FAILED]


def phases_for(plan: A.RepairPlan, *, trim: bool = False) -> list[str]:
    """The phases a plan goes through after the image is attached, in order (``trim``: the
    guest's file systems are trimmed after the repairs)."""
    phases = ["attach", "detect"]
    if A.FS_CHECK in plan.actions:
        phases.append("fsck")
    phases.append("mount")
    phases += [a for a in plan.actions if a in FILE_FIXES]
    if A.VIRTIO_INITRAMFS in plan.actions:
        phases.append("initramfs")
    if A.SELINUX_RELABEL in plan.actions:
        phases.append(A.SELINUX_RELABEL)
    if trim:
        phases.append("trim")
    return [*phases, "detach"]


UNREPAIRED = ("failed", "errors_left")


def _mounted_filesystems(
    guest: MountedGuest, disks: Sequence[AttachedDisk]
) -> list[MountedFilesystem]:
    found = []
    for mountpoint, host_path in guest.host_paths.items():
        disk, number = guest.guest.mounted[mountpoint]
        partition = next(
            (p for d in disks if d.index == disk for p in d.partitions if p.number == number),
            None,
        )
        if partition is not None:
            found.append(MountedFilesystem(mountpoint, host_path, partition))
    return found


def _name(disk: int, number: int) -> str:
    return f"{disk}:{number}" if disk else str(number)


async def _check_filesystems(
    disks: Sequence[AttachedDisk], plan: A.RepairPlan, clock: PhaseClock, result: RepairOutcome
) -> None:
    started = time.monotonic()
    checkable = [p for disk in disks for p in disk.partitions if p.fstype]
    for index, partition in enumerate(checkable):
        clock.within(
            "fsck",
            index / max(1, len(checkable)),
            f"checking partition {_name(partition.disk, partition.number)}",
        )
        result.fsck.append(await check_filesystem(partition, repair=not plan.dry_run))
    bad = [r for r in result.fsck if r.result in ("failed", "errors_left")]
    found = [r for r in result.fsck if r.result in ("repaired", "errors_found")]
    checked = [r for r in result.fsck if r.result != "skipped"]
    if bad:
        status, reason = (
            OutcomeStatus.FAILED,
            "; ".join(f"partition {_name(r.disk, r.partition)}: {r.detail}" for r in bad),
        )
    elif found:
        status = OutcomeStatus.WOULD_APPLY if plan.dry_run else OutcomeStatus.APPLIED
        verb = "found errors on" if plan.dry_run else "repaired"
        names = ", ".join(_name(r.disk, r.partition) for r in found)
        reason = f"{verb} partition(s) {names}"
    elif checked:
        how = "read-only " if plan.dry_run else ""
        status, reason = (
            OutcomeStatus.APPLIED,
            f"{how}checked {len(checked)} file system(s): all clean",
        )
    else:
        status, reason = OutcomeStatus.SKIPPED, "no file system this agent can check"
    outcome = Outcome(A.FS_CHECK, status, reason, seconds=time.monotonic() - started)
    result.outcomes.append(outcome)


async def _run_fixes(
    ctx: FixContext,
    plan: A.RepairPlan,
    clock: PhaseClock,
    journal: AttachmentJournal,
    abilities: NodeAbilities,
    result: RepairOutcome,
    workdir: Path,
) -> None:
    for action in plan.actions:
        started = time.monotonic()
        try:
            outcome = await _run_fix(action, ctx, plan, clock, journal, abilities, workdir)
        except (OSError, GuestPathError) as exc:
            # A hostile or damaged guest (a directory where a file should be, a symlink loop)
            # fails this action, not the whole job.
            outcome = Outcome(action, OutcomeStatus.FAILED, f"{type(exc).__name__}: {exc}")
        if outcome is None:
            continue
        outcome.seconds = time.monotonic() - started
        result.outcomes.append(outcome)


def _unmounted_esp(ctx: FixContext) -> AttachedPartition | None:
    """The guest's /boot/efi partition when it is vfat and was left unmounted (no driver)."""
    if "/boot/efi" in ctx.guest.mounted:
        return None
    entry = next((e for e in ctx.guest.fstab if e.mountpoint == "/boot/efi"), None)
    partition = ctx.devices.lookup(entry.spec) if entry else None
    return partition if partition is not None and partition.fstype == "vfat" else None


async def _run_fix(
    action: str,
    ctx: FixContext,
    plan: A.RepairPlan,
    clock: PhaseClock,
    journal: AttachmentJournal,
    abilities: NodeAbilities,
    workdir: Path,
) -> Outcome | None:
    """Run one action (not fs_check, which runs before mounting); None for fs_check."""
    if action == A.UEFI_FALLBACK and (esp := _unmounted_esp(ctx)) is not None:
        clock.enter(action)
        return await fix_uefi_fallback_unmounted(ctx, esp, workdir)
    if action in FILE_FIXES:
        clock.enter(action)
        return FILE_FIXES[action](ctx)
    if action == A.VIRTIO_INITRAMFS:
        clock.enter("initramfs", "virtio drivers into the initramfs")
        if not plan.virtio_drivers:
            return Outcome(action, OutcomeStatus.SKIPPED, "parameters.virtio_drivers is false")
        return await fix_virtio_initramfs(
            ctx, journal, can_chroot=abilities.can_chroot, regenerate=plan.regenerate_initramfs
        )
    if action == A.SELINUX_RELABEL:
        clock.enter(action)
        return await fix_selinux_relabel(ctx, abilities.use_selinux_tools)
    return None


async def repair_disk(
    disks: Sequence[AttachedDisk],
    plan: A.RepairPlan,
    workdir: Path,
    journal: AttachmentJournal,
    clock: PhaseClock,
    abilities: NodeAbilities,
    parameters: dict[str, Any],
    *,
    trim: bool = False,
) -> RepairOutcome:
    """Run the plan's actions on a VM's attached disks (the job's own first); everything
    mounted is unmounted on return.

    Args:
        trim: after the repairs, trim the guest's file systems on the job's own disk (an
            overlay whose discards become holes); never in a dry run.
    """
    result = RepairOutcome()
    partitions = [p for disk in disks for p in disk.partitions]
    names = ", ".join(f"{_name(p.disk, p.number)}:{p.fstype or '-'}" for p in partitions)
    clock.enter("detect", f"{len(disks)} disk(s), partitions {names}")
    if A.FS_CHECK in plan.actions:
        clock.enter("fsck", "checking file systems")
        await _check_filesystems(disks, plan, clock, result)
    clock.enter("mount", "looking for the root file system")
    async with contextlib.AsyncExitStack() as stack:
        guest = await mount_guest(stack, disks, workdir, journal, read_only=plan.dry_run)
        result.guest = guest.guest.describe(partitions)
        result.disks = guest.guest.describe_disks(list(disks))
        if plan.guest_info:
            clock.within("mount", 1.0, "describing the guest")
            result.guest_info = await describe_guest_into(guest, disks, workdir / "guest-scratch")
        changes = ChangeSet(guest.root, dry_run=plan.dry_run)
        result.changes = changes
        ctx = FixContext(guest.root, guest.guest, guest.devices, changes, parameters)
        await _run_fixes(ctx, plan, clock, journal, abilities, result, workdir)
        if trim and not plan.dry_run:
            clock.enter("trim", "discarding the free space of the guest's file systems")
            damaged = {(r.disk, r.partition) for r in result.fsck if r.result in UNREPAIRED}
            result.trims = await trim_filesystems(
                _mounted_filesystems(guest, disks), overlay_disks={0}, damaged=damaged
            )
        clock.enter("detach", "unmounting and detaching")
    return result
