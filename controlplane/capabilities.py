"""What an agent must offer to run a job: the capability rules of the v1 protocol."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from protocol.migration_jobs import pinned_agent
from protocol.spec import JobSpec, Operation

GIB = 1024**3

_REPAIR_OPERATIONS = frozenset(
    {
        Operation.OFFLINE_FIX,
        Operation.BOOT_REPAIR,
        Operation.SELINUX_PREP,
        Operation.LVM_REPAIR,
        Operation.FS_REPAIR,
        Operation.INITRAMFS_REGENERATE,
    }
)


@dataclass(frozen=True)
class CapabilityNeed:
    """One need, met when the agent has every probe of at least one option."""

    options: tuple[frozenset[str], ...]

    @classmethod
    def single(cls, name: str) -> CapabilityNeed:
        return cls((frozenset({name}),))

    def met_by(self, available: frozenset[str]) -> bool:
        return any(option <= available for option in self.options)

    def describe(self) -> str:
        """The need as a user reads it: ``nbd`` or ``nbd or fuse+loop+qemu_storage_daemon``."""
        return _described(self.options)


@functools.lru_cache(maxsize=256)
def _described(options: tuple[frozenset[str], ...]) -> str:
    # Every submit describes its needs (needs_kind): the few there are, spelled once each.
    return " or ".join("+".join(sorted(option)) for option in options)


# Offline repair attaches the guest disk through NBD, or through a FUSE export on a loop device.
_ATTACH = CapabilityNeed((frozenset({"nbd"}), frozenset({"fuse", "qemu_storage_daemon", "loop"})))


def _mounts_the_guest(spec: JobSpec) -> bool:
    """Inspect describing the guest (``parameters.guest_info``) and convert reclaiming free
    space (``parameters.sparsify``) attach the image and mount its file systems, as a repair
    does, so they need the same probes."""
    if spec.operation is Operation.INSPECT:
        return spec.parameters.get("guest_info") is True
    if spec.operation is Operation.CONVERT:
        return spec.parameters.get("sparsify") is True
    return False


def capability_needs(spec: JobSpec) -> list[CapabilityNeed]:
    """The probes an agent must have for this job (operation and capability_requirements)."""
    # Every operation runs qemu-img (publish: qemu-img check) except a migration's cleanup,
    # which only removes files.
    names = [] if spec.operation is Operation.MIGRATION_CLEANUP else ["qemu_img"]
    alternatives: list[CapabilityNeed] = []
    if spec.operation in _REPAIR_OPERATIONS or _mounts_the_guest(spec):
        names.append("mount")
        alternatives.append(_ATTACH)
    if spec.operation is Operation.LVM_REPAIR:
        names += ["lvm", "device_mapper"]
    reqs = spec.capability_requirements
    if reqs.needs_nbd:
        names.append("nbd")
    if reqs.needs_lvm:
        names += ["lvm", "device_mapper"]
    if reqs.needs_mount:
        names.append("mount")
    if reqs.needs_selinux_tools:
        names.append("selinux_tools")
    singles = [CapabilityNeed.single(name) for name in dict.fromkeys(names)]
    # An explicit need for nbd already settles how the disk is attached.
    if reqs.needs_nbd:
        alternatives = []
    return singles + alternatives


def needs_kind(spec: JobSpec) -> str:
    """A key equal for jobs that fit exactly the same agents (stored with the job).

    The scheduler judges each kind once per pass and reads queued jobs only of kinds some
    agent can take now, so its work grows with the free slots, not with the queue.
    """
    reqs = spec.capability_requirements
    needs = ",".join(need.describe() for need in capability_needs(spec))
    kind = f"{needs};mem={reqs.min_memory_gb or 0};disk={reqs.min_disk_space_gb or 0}"
    pinned = pinned_agent(spec)
    return kind if pinned is None else f"{kind};agent={pinned}"


def format_gib(size_bytes: int) -> str:
    """Bytes as whole or one-decimal GB (GiB), as the spec's *_gb fields count them."""
    text = f"{size_bytes / GIB:.1f}"
    return text.removesuffix(".0") + " GB"
