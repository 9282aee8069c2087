"""A VM migration through an in-process control plane and a test-double agent: its jobs in
order (data disks, then the repair with them attached, then publish), its state derived from
them, a failed disk that cancels its siblings and cleans up, a cancel that cascades, a wave
that is stored all or none, and idempotent resubmission."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import json_format

from protocol.gen.h2k.v1 import migration_pb2, migration_pb2_grpc, services_pb2
from protocol.migration_jobs import staged_name
from tests.component.conftest import capabilities
from tests.support.builders import migration_spec

S = migration_pb2


async def register(cp, address: str, slots: int) -> None:
    """An agent able to repair (the fake runs every job the same way)."""
    probes = ("qemu_img", "mount", "fuse", "qemu_storage_daemon", "loop")
    await cp.registry.RegisterAgent(
        services_pb2.RegisterAgentRequest(
            name="node-1",
            address=address,
            capabilities=capabilities(*probes),
            max_concurrent_jobs=slots,
            version="test",
        )
    )


def stub(cp) -> migration_pb2_grpc.MigrationServiceStub:
    return migration_pb2_grpc.MigrationServiceStub(cp.channel)


async def in_state(cp, kit, migration_id: str, state: int) -> S.Migration:
    async def check():
        m = await stub(cp).GetMigration(S.GetMigrationRequest(migration_id=migration_id))
        return m if m.state == state else None

    return await kit.eventually(check, f"{migration_id} in {S.MigrationState.Name(state)}")


async def executed(kit, worker, count: int) -> list:
    async def check():
        return worker.executed if len(worker.executed) >= count else None

    return await kit.eventually(check, f"{count} jobs on the agent")


async def test_a_two_disk_vm_runs_data_disk_repair_then_publish_and_completes(
    start_control_plane, start_worker, kit
):
    async with start_worker("node-1") as agent, start_control_plane() as cp:
        await register(cp, agent.address, slots=4)
        answer = await stub(cp).SubmitMigration(S.SubmitMigrationRequest(spec=migration_spec()))
        assert answer.created and answer.migration.disks_total == 2
        agent.worker.release()
        done = await in_state(cp, kit, "web-01-m1", S.MIGRATION_STATE_COMPLETED)
        ops = [spec.operation for spec in agent.worker.executed]
        ids = [spec.job_id for spec in agent.worker.executed]
        assert ids == ["web-01-m1.disk.disk-2", "web-01-m1.disk.disk-0", "web-01-m1.publish"]
        assert ops[0] == 2 and ops[1] == 3 and ops[2] == 9  # convert, offline_fix, publish
        repair = json_format.MessageToDict(agent.worker.executed[1].parameters)["migration"]
        assert repair["output_name"] == staged_name("web-01-m1", "web-01.qcow2")
        assert repair["attach_outputs"][0]["path"] == "/data/output/" + staged_name(
            "web-01-m1", "web-01-disk-2.qcow2"
        )
        assert repair["pinned_agent"] == "node-1"
        publish = json_format.MessageToDict(agent.worker.executed[2].parameters)["migration"]
        assert [f["final"] for f in publish["files"]][-1] == "web-01.qcow2"  # boot disk last
        assert "<domain" in publish["documents"][staged_name("web-01-m1", "web-01.xml")]
        assert done.outputs[-1] == "/data/output/web-01.qcow2"
        assert done.bytes_done == done.bytes_total == 3 << 30 and done.disks_done == 2
        states = [S.MigrationState.Name(t.to_state) for t in done.history]
        assert states == [
            "MIGRATION_STATE_QUEUED",
            "MIGRATION_STATE_RUNNING",
            "MIGRATION_STATE_COMPLETED",
        ]


async def test_a_failed_disk_fails_the_migration_naming_it_and_cleans_up(
    start_control_plane, start_worker, kit
):
    async with start_worker("node-1") as agent, start_control_plane() as cp:
        await register(cp, agent.address, slots=4)
        agent.worker.fail_jobs.add("web-01-m1.disk.disk-2")
        await stub(cp).SubmitMigration(S.SubmitMigrationRequest(spec=migration_spec()))
        agent.worker.release()
        failed = await in_state(cp, kit, "web-01-m1", S.MIGRATION_STATE_FAILED)
        assert "disk disk-2" in failed.reason and "disk is bad" in failed.reason
        ids = [spec.job_id for spec in agent.worker.executed]
        # TOOL_FAILED is retried once (the jobs' retry_count), then the migration fails: no
        # repair, no publish, and the staged outputs are removed.
        assert ids == ["web-01-m1.disk.disk-2", "web-01-m1.disk.disk-2", "web-01-m1.cleanup"]
        cleanup = json_format.MessageToDict(agent.worker.executed[2].parameters)["migration"]
        assert staged_name("web-01-m1", "web-01.qcow2") in cleanup["staged"]
        assert failed.outputs == []


async def test_cancel_cascades_to_the_running_jobs_and_ends_cancelled(
    start_control_plane, start_worker, kit
):
    async with start_worker("node-1") as agent, start_control_plane() as cp:
        await register(cp, agent.address, slots=4)
        await stub(cp).SubmitMigration(S.SubmitMigrationRequest(spec=migration_spec(repair=False)))
        await executed(kit, agent.worker, 2)  # both disks run (no repair: no ordering)
        await stub(cp).CancelMigration(S.CancelMigrationRequest(migration_id="web-01-m1"))
        agent.worker.release()  # the cleanup job may run now
        cancelled = await in_state(cp, kit, "web-01-m1", S.MIGRATION_STATE_CANCELLED)
        assert all(j.state in (8, 7) for j in cancelled.jobs if j.role == "convert")
        assert [j.role for j in cancelled.jobs][-1] == "cleanup"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(cp).CancelMigration(S.CancelMigrationRequest(migration_id="web-01-m1"))
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_resubmission_is_idempotent_and_a_bad_wave_stores_nothing(start_control_plane, kit):
    async with start_control_plane() as cp:
        spec = migration_spec()
        await stub(cp).SubmitMigration(S.SubmitMigrationRequest(spec=spec))
        again = await stub(cp).SubmitMigration(S.SubmitMigrationRequest(spec=spec))
        assert again.created is False
        other = migration_spec()
        other.vm.cpus = 8
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(cp).SubmitMigration(S.SubmitMigrationRequest(spec=other))
        assert err.value.code() is grpc.StatusCode.ALREADY_EXISTS
        good = migration_spec("db-01-m1")
        bad = migration_spec("bad-m1")
        bad.vm.disks[1].source_format = "iso"
        del bad.network_map["VM Network"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(cp).SubmitMigrations(S.SubmitMigrationsRequest(specs=[good, bad]))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "specs[1].vm.disks[1].source_format: must be one of" in err.value.details()
        listed = await stub(cp).ListMigrations(S.ListMigrationsRequest())
        assert [m.spec.migration_id for m in listed.migrations] == ["web-01-m1"]


async def test_an_unmapped_network_is_refused_before_any_disk_work(start_control_plane):
    async with start_control_plane() as cp:
        spec = migration_spec()
        del spec.network_map["VM Network"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub(cp).SubmitMigration(S.SubmitMigrationRequest(spec=spec))
        assert "'VM Network' has no mapping" in err.value.details()


async def test_migrations_of_one_source_wait_for_its_in_flight_limit(
    start_control_plane, start_worker, kit
):
    async with start_worker("node-1") as agent, start_control_plane() as cp:
        await register(cp, agent.address, slots=8)
        specs = [
            migration_spec(f"vm-{i}", repair=False, max_in_flight_per_source=1) for i in range(2)
        ]
        for i, spec in enumerate(specs):
            spec.vm.name = f"vm-{i}"
        await stub(cp).SubmitMigrations(S.SubmitMigrationsRequest(specs=specs))
        await executed(kit, agent.worker, 2)
        second = await stub(cp).GetMigration(S.GetMigrationRequest(migration_id="vm-1"))
        assert second.state == S.MIGRATION_STATE_QUEUED
        assert "max_in_flight_per_source 1" in second.reason
        agent.worker.release()
        await in_state(cp, kit, "vm-1", S.MIGRATION_STATE_COMPLETED)
