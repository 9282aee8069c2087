"""A stored migration, its states and the one table of legal migration transitions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import grpc

from protocol.errors import H2KError
from protocol.gen.h2k.v1 import migration_pb2


class MigrationState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in (MigrationState.COMPLETED, MigrationState.FAILED, MigrationState.CANCELLED)

    def to_proto(self) -> migration_pb2.MigrationState:
        return _WIRE[self]

    @classmethod
    def from_proto(cls, value: int) -> MigrationState:
        """Raises ValueError for UNSPECIFIED or an unknown value."""
        name = migration_pb2.MigrationState.Name(value)
        return cls(name.removeprefix("MIGRATION_STATE_"))


_WIRE = {
    MigrationState.QUEUED: migration_pb2.MIGRATION_STATE_QUEUED,
    MigrationState.RUNNING: migration_pb2.MIGRATION_STATE_RUNNING,
    MigrationState.COMPLETED: migration_pb2.MIGRATION_STATE_COMPLETED,
    MigrationState.FAILED: migration_pb2.MIGRATION_STATE_FAILED,
    MigrationState.CANCELLED: migration_pb2.MIGRATION_STATE_CANCELLED,
}


class Stage(StrEnum):
    """Where a migration is in its pipeline (the driver's bookmark)."""

    WAITING = "waiting"  # queued: its source is at its in-flight limit
    DISKS = "disks"  # converting the disks (data disks first when the guest is repaired)
    REPAIR = "repair"  # repairing the guest on the boot disk, the other disks attached
    PUBLISH = "publish"  # putting the outputs at their final names, boot disk last
    CLEANUP = "cleanup"  # removing a failed or cancelled migration's staged outputs
    DONE = "done"


_S = MigrationState
TRANSITIONS: dict[MigrationState, frozenset[MigrationState]] = {
    _S.QUEUED: frozenset({_S.RUNNING, _S.FAILED, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.COMPLETED, _S.FAILED, _S.CANCELLED}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}


class IllegalMigrationTransition(H2KError):
    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, from_state: MigrationState, to_state: MigrationState) -> None:
        super().__init__(f"illegal migration state transition {from_state} -> {to_state}")


def check_migration_transition(from_state: MigrationState, to_state: MigrationState) -> None:
    if to_state not in TRANSITIONS[from_state]:
        raise IllegalMigrationTransition(from_state, to_state)


@dataclass(frozen=True)
class MigrationTransition:
    from_state: MigrationState | None
    to_state: MigrationState
    time: datetime
    reason: str


@dataclass(frozen=True)
class MigrationRecord:
    """One migration as stored."""

    migration_id: str
    spec: migration_pb2.MigrationSpec
    fingerprint: str
    state: MigrationState
    stage: Stage
    submitted_at: datetime
    updated_at: datetime
    source_key: str = ""
    reason: str = ""
    cancel_requested: bool = False
    finished_at: datetime | None = None
    history: tuple[MigrationTransition, ...] = ()
    outputs: tuple[str, ...] = field(default_factory=tuple)


def spec_fingerprint(spec: migration_pb2.MigrationSpec) -> str:
    """A hash of the spec, equal for equal specs (the idempotency check)."""
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()
