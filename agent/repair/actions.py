"""Which repair actions each operation runs, and the checks of its job parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agent.errors import InvalidSpec
from protocol.spec import JobSpec, format_validation_error
from protocol.spec import Operation as Op

FS_CHECK = "fs_check"
FSTAB_UUID = "fstab_uuid"
GRUB_ROOT_UUID = "grub_root_uuid"
UEFI_FALLBACK = "uefi_fallback"
NETWORK_CLEANUP = "network_cleanup"
REMOVE_VMWARE_TOOLS = "remove_vmware_tools"
VIRTIO_INITRAMFS = "virtio_initramfs"
SELINUX_RELABEL = "selinux_relabel"

# In the order they run: file systems are checked before anything is mounted, the initramfs
# is rebuilt after the files it reads are fixed, and relabelling comes last.
ALL_ACTIONS = (
    FS_CHECK,
    FSTAB_UUID,
    GRUB_ROOT_UUID,
    UEFI_FALLBACK,
    NETWORK_CLEANUP,
    REMOVE_VMWARE_TOOLS,
    VIRTIO_INITRAMFS,
    SELINUX_RELABEL,
)
OPERATION_ACTIONS: dict[Op, tuple[str, ...]] = {
    Op.OFFLINE_FIX: ALL_ACTIONS,
    Op.BOOT_REPAIR: (FSTAB_UUID, GRUB_ROOT_UUID, UEFI_FALLBACK),
    Op.FS_REPAIR: (FS_CHECK,),
    Op.INITRAMFS_REGENERATE: (VIRTIO_INITRAMFS,),
    Op.SELINUX_PREP: (SELINUX_RELABEL,),
    Op.LVM_REPAIR: (FS_CHECK,),
}
BOOLEAN_PARAMETERS = {
    "boot_check": False,
    "dry_run": False,
    "in_place": False,
    "regenerate_initramfs": True,
    "virtio_drivers": True,
    "guest_info": False,  # describe the guest (agent/guest) into the report
}


DEFAULT_BOOT_CHECK_SECONDS = 300
BOOT_CHECK_SECONDS_RANGE = (10, 3600)


@dataclass(frozen=True)
class RepairPlan:
    """What one repair job will do."""

    operation: Op
    actions: tuple[str, ...]
    dry_run: bool
    in_place: bool
    regenerate_initramfs: bool
    virtio_drivers: bool
    guest_info: bool = False
    boot_check: bool = False
    boot_check_seconds: float = DEFAULT_BOOT_CHECK_SECONDS


def _boolean(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name, BOOLEAN_PARAMETERS[name])
    if not isinstance(value, bool):
        raise InvalidSpec(f"parameters.{name}: must be true or false", phase="validate")
    return value


def _boot_check(parameters: dict[str, Any]) -> bool:
    wanted = _boolean(parameters, "boot_check")
    if wanted and _boolean(parameters, "dry_run"):
        raise InvalidSpec(
            "parameters.boot_check: a dry run writes no repaired image to boot", phase="validate"
        )
    return wanted


def _boot_check_seconds(parameters: dict[str, Any]) -> float:
    value = parameters.get("boot_check_seconds", DEFAULT_BOOT_CHECK_SECONDS)
    low, high = BOOT_CHECK_SECONDS_RANGE
    # Whole numbers arrive as floats: job parameters travel as a protobuf Struct.
    whole = isinstance(value, int | float) and not isinstance(value, bool) and value == int(value)
    if not whole or not low <= value <= high:
        raise InvalidSpec(
            f"parameters.boot_check_seconds: must be a whole number of seconds from {low} "
            f"to {high}",
            phase="validate",
        )
    return float(value)


def selected_actions(operation: Op, requested: list[str]) -> tuple[str, ...]:
    """The operation's actions, narrowed to ``requested`` when the job names any.

    Raises:
        InvalidSpec: a requested action is unknown, or not one this operation performs.
    """
    allowed = OPERATION_ACTIONS[operation]
    for index, name in enumerate(requested):
        if name not in ALL_ACTIONS:
            raise InvalidSpec(
                f"requested_actions[{index}]: {name!r} is not a repair action "
                f"(known: {', '.join(ALL_ACTIONS)})",
                phase="validate",
            )
        if name not in allowed:
            raise InvalidSpec(
                f"requested_actions[{index}]: {name!r} is not part of {operation.value} "
                f"(it performs: {', '.join(allowed)})",
                phase="validate",
            )
    if not requested:
        return allowed
    return tuple(a for a in allowed if a in requested)


def plan_repair(spec: JobSpec) -> RepairPlan:
    """Validate a repair job's actions and parameters.

    Raises:
        InvalidSpec: naming the field and the rule.
    """
    actions = selected_actions(spec.operation, list(spec.requested_actions))
    params = spec.parameters
    try:
        spec.convert_parameters()  # the repaired image is written as convert writes it
    except ValidationError as exc:
        message = "; ".join(format_validation_error(exc, prefix="parameters."))
        raise InvalidSpec(message, phase="validate") from exc
    return RepairPlan(
        operation=spec.operation,
        actions=actions,
        dry_run=_boolean(params, "dry_run"),
        in_place=_boolean(params, "in_place"),
        regenerate_initramfs=_boolean(params, "regenerate_initramfs"),
        virtio_drivers=_boolean(params, "virtio_drivers"),
        guest_info=_boolean(params, "guest_info"),
        boot_check=_boot_check(params),
        boot_check_seconds=_boot_check_seconds(params),
    )
