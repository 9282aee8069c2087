"""The migrations part of the store contract, on SQLite and PostgreSQL alike: a wave is stored
all or none, resubmission is idempotent by id and fingerprint, state and history survive a
reopen, and a cancel request set by one writer is not lost to another's save."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.migrations.records import (
    MigrationRecord,
    MigrationState,
    MigrationTransition,
    Stage,
    spec_fingerprint,
)
from protocol.errors import AlreadyExists, NotFound
from protocol.gen.h2k.v1 import migration_pb2

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def record(migration_id: str, vm_name: str = "web-01") -> MigrationRecord:
    spec = migration_pb2.MigrationSpec(
        migration_id=migration_id,
        vm=migration_pb2.VmDefinition(
            name=vm_name,
            disks=[migration_pb2.VmDisk(id="disk-0", path="/in/a.vmdk", source_format="vmdk")],
        ),
        output_directory="/out",
    )
    return MigrationRecord(
        migration_id=migration_id,
        spec=spec,
        fingerprint=spec_fingerprint(spec),
        state=MigrationState.QUEUED,
        stage=Stage.WAITING,
        submitted_at=NOW,
        updated_at=NOW,
        source_key="vsphere/DC1",
        history=(MigrationTransition(None, MigrationState.QUEUED, NOW, "submitted"),),
    )


async def test_a_wave_is_stored_and_read_back_whole(backend):
    async with backend.opened() as store:
        results = await store.create_migrations([record("m1"), record("m2", "db-01")])
        assert [created for _r, created in results] == [True, True]
    async with backend.opened() as store:  # committed: a reopened store sees both
        got = await store.get_migration("m2")
        assert got.spec.vm.name == "db-01"
        assert got.state is MigrationState.QUEUED and got.stage is Stage.WAITING
        assert got.history[0].reason == "submitted" and got.history[0].time == NOW
        assert [m.migration_id for m in await store.list_migrations()] == ["m1", "m2"]


async def test_resubmission_is_idempotent_and_a_conflict_stores_nothing(backend):
    async with backend.opened() as store:
        await store.create_migrations([record("m1")])
        ((_same, created),) = await store.create_migrations([record("m1")])
        assert created is False
        with pytest.raises(AlreadyExists, match=r"specs\[1\].migration_id"):
            await store.create_migrations([record("m3"), record("m1", "other-vm")])
        with pytest.raises(NotFound):
            await store.get_migration("m3")  # the wave's first migration was not kept


async def test_saved_state_keeps_a_cancel_requested_meanwhile(backend):
    async with backend.opened() as store:
        ((stored, _),) = await store.create_migrations([record("m1")])
        await store.request_migration_cancel("m1", NOW)
        later = NOW + timedelta(seconds=5)
        running = dataclasses.replace(
            stored,
            state=MigrationState.RUNNING,
            stage=Stage.DISKS,
            updated_at=later,
            history=(
                *stored.history,
                MigrationTransition(MigrationState.QUEUED, MigrationState.RUNNING, later, "go"),
            ),
        )
        saved = await store.save_migration(running)  # written from a copy read before cancel
        assert saved.cancel_requested is True
        assert saved.state is MigrationState.RUNNING and len(saved.history) == 2
        listed = await store.list_migrations(states=[MigrationState.RUNNING], limit=10)
        assert [m.migration_id for m in listed] == ["m1"]
        assert await store.list_migrations(states=[MigrationState.QUEUED]) == []
        with pytest.raises(NotFound):
            await store.save_migration(dataclasses.replace(running, migration_id="nope"))
