"""A VM migration survives the death of the replica that drives it: the other replica takes
the scheduler role, drives the migration on from what is stored, and no job runs twice."""

from __future__ import annotations

from devsupport.cluster import wait_for
from protocol.gen.h2k.v1 import migration_pb2 as S
from tests.ha.harness import ReplicaCluster
from tests.support.faults import state


def _spec(c: ReplicaCluster) -> S.MigrationSpec:
    outdir = c.output_dir / "ha-vm"
    outdir.mkdir()
    spec = S.MigrationSpec(
        migration_id="ha-vm-1",
        vm=S.VmDefinition(
            name="ha-vm",
            disks=[
                S.VmDisk(id="boot", path=str(c.input_dir / "tiny.img"), source_format="raw"),
                S.VmDisk(id="data", path=str(c.input_dir / "slow.img"), source_format="raw"),
            ],
        ),
        pipeline=S.MigrationPipeline(compress=True, validate=True),
        output_directory=str(outdir),
    )
    return spec


def test_killing_the_driving_replica_mid_migration_loses_nothing(replicas: ReplicaCluster) -> None:
    c = replicas
    c.start_replica("cp-a")
    wait_for(lambda: c.scheduler() == "cp-a", timeout=15, what="cp-a schedules")
    c.start_replica("cp-b")
    c.point_agents_at("cp-b")
    c.start_agent("node-1", max_jobs=2)
    api_b = c.api_of("cp-b")
    (answer,) = api_b.submit_migrations([_spec(c)])
    assert answer.created
    # The data disk (slow, compressed) converts first: kill the driver while it runs.
    c.wait_progress("ha-vm-1.disk.data", 5)
    c.replicas["cp-a"].kill()
    c.address = c.replica_addresses["cp-b"]

    def finished() -> S.Migration | None:
        m = api_b.get_migration("ha-vm-1")
        return m if m.state in (S.MIGRATION_STATE_COMPLETED, S.MIGRATION_STATE_FAILED) else None

    done = wait_for(finished, timeout=180, interval=0.5, what="the migration ends")
    assert done.state == S.MIGRATION_STATE_COMPLETED, done.reason
    assert c.scheduler() == "cp-b"
    states = [S.MigrationState.Name(t.to_state) for t in done.history]
    assert states == [
        "MIGRATION_STATE_QUEUED",
        "MIGRATION_STATE_RUNNING",
        "MIGRATION_STATE_COMPLETED",
    ]
    for job_id in ("ha-vm-1.disk.data", "ha-vm-1.disk.boot", "ha-vm-1.publish"):
        assert state(api_b.get(job_id)) == "COMPLETED"
        c.assert_ran_once_with_full_events(job_id, api_b)
    names = sorted(p.name for p in (c.output_dir / "ha-vm").iterdir())
    assert names == [
        "ha-vm-data.qcow2",
        "ha-vm.kubevirt.yaml",
        "ha-vm.qcow2",
        "ha-vm.report.json",
        "ha-vm.xml",
    ]
