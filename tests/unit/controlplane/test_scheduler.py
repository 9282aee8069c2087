"""The scheduler: order, fit, load, and the reasons a user reads when a job waits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from controlplane.capabilities import needs_kind
from controlplane.models import JobRecord
from controlplane.placement import DEFAULT_LEASE, AgentView, SchedulePlan, judge, place


def schedule_queued_jobs(
    queued: Sequence[JobRecord],
    agents: Sequence[AgentView],
    now: datetime,
    lease: timedelta = DEFAULT_LEASE,
) -> SchedulePlan:
    """What a scheduling pass does with the queue, minus the store: order, judge, place."""
    ordered = sorted(queued, key=lambda j: (j.priority, j.submitted_at, j.job_id))
    kinds = {job.job_id: needs_kind(job.spec) for job in ordered}
    specs = {kinds[job.job_id]: job.spec for job in ordered}
    judged = {kind: judge(spec, agents, now, lease) for kind, spec in specs.items()}
    plan, _load = place([(job.job_id, kinds[job.job_id]) for job in ordered], judged, agents)
    return plan


def test_jobs_are_placed_by_priority_then_age(build):
    jobs = [
        build.queued_job("low-old", priority=5, age_seconds=300),
        build.queued_job("high-new", priority=1, age_seconds=10),
        build.queued_job("high-old", priority=1, age_seconds=20),
    ]
    plan = schedule_queued_jobs(jobs, [build.agent("node-1", slots=10)], build.t0)
    assert [job_id for job_id, _ in plan.assignments] == ["high-old", "high-new", "low-old"]
    assert plan.waiting == {}


def test_the_only_free_slot_goes_to_the_most_urgent_job(build):
    jobs = [
        build.queued_job("low", priority=9, age_seconds=100),
        build.queued_job("urgent", priority=1),
    ]
    plan = schedule_queued_jobs(jobs, [build.agent("node-1", slots=1)], build.t0)
    assert plan.assignments == [("urgent", "node-1")]
    assert plan.waiting == {"low": "the fitting agent is busy (1/1 slots used)"}


def test_no_agent_registered(build):
    plan = schedule_queued_jobs([build.queued_job("j")], [], build.t0)
    assert plan.waiting == {"j": "no agent registered"}


def test_a_missing_capability_is_named(build):
    job = build.queued_job("j", capability_requirements={"needs_nbd": True})
    agents = [build.agent("node-1", ("qemu_img", "mount", "loop"))]
    plan = schedule_queued_jobs([job], agents, build.t0)
    assert plan.waiting == {"j": "no agent has nbd"}


def test_convert_needs_qemu_img(build):
    plan = schedule_queued_jobs(
        [build.queued_job("j")], [build.agent("node-1", ("nbd",))], build.t0
    )
    assert plan.waiting == {"j": "no agent has qemu_img"}


def test_offline_repair_attaches_through_nbd_or_fuse_and_loop(build):
    job = build.queued_job("fix", operation="offline_fix", parameters={})
    fuse_only = build.agent("node-1", ("qemu_img", "mount", "fuse", "loop"))
    plan = schedule_queued_jobs([job], [fuse_only], build.t0)
    assert plan.waiting == {"fix": "no agent has nbd or fuse+loop+qemu_storage_daemon"}

    fuse_export = build.agent(
        "node-2", ("qemu_img", "mount", "fuse", "loop", "qemu_storage_daemon")
    )
    plan = schedule_queued_jobs([job], [fuse_only, fuse_export], build.t0)
    assert plan.assignments == [("fix", "node-2")]


def test_guest_info_inspect_and_sparsify_convert_mount_the_guest_like_a_repair(build):
    jobs = [
        build.queued_job("look", operation="inspect", parameters={"guest_info": True}),
        build.queued_job("trim", parameters={"sparsify": True}),
    ]
    disk_tools_only = build.agent("node-1", ("qemu_img",))
    plan = schedule_queued_jobs(jobs, [disk_tools_only], build.t0)
    assert plan.waiting == {"look": "no agent has mount", "trim": "no agent has mount"}
    attach = build.agent("node-2", ("qemu_img", "mount", "fuse", "loop", "qemu_storage_daemon"))
    plan = schedule_queued_jobs(jobs, [disk_tools_only, attach], build.t0)
    assert {job for job, _agent in plan.assignments} == {"look", "trim"}
    plain = build.queued_job("plain", operation="inspect", parameters={"guest_info": False})
    assert schedule_queued_jobs([plain], [disk_tools_only], build.t0).assignments == [
        ("plain", "node-1")
    ]


def test_lvm_repair_needs_lvm_and_device_mapper(build):
    job = build.queued_job("lvm", operation="lvm_repair", parameters={})
    no_dm = build.agent("node-1", ("qemu_img", "mount", "nbd", "lvm"))
    full = build.agent("node-2", ("qemu_img", "mount", "nbd", "lvm", "device_mapper"))
    assert schedule_queued_jobs([job], [no_dm], build.t0).waiting == {
        "lvm": "no agent has device_mapper"
    }
    assert schedule_queued_jobs([job], [no_dm, full], build.t0).assignments == [("lvm", "node-2")]


def test_the_least_loaded_agent_wins_and_ties_go_by_name(build):
    agents = [
        build.agent("node-b", slots=4, running=1),
        build.agent("node-a", slots=4, running=2),
        build.agent("node-c", slots=4, running=1),
    ]
    plan = schedule_queued_jobs([build.queued_job("j")], agents, build.t0)
    assert plan.assignments == [("j", "node-b")]


def test_assignments_in_one_plan_use_up_slots(build):
    jobs = [build.queued_job(f"j{i}", age_seconds=10 - i) for i in range(5)]
    agents = [build.agent("node-1", slots=2, running=1), build.agent("node-2", slots=2)]
    plan = schedule_queued_jobs(jobs, agents, build.t0)
    assert plan.assignments == [("j0", "node-2"), ("j1", "node-1"), ("j2", "node-2")]
    assert plan.waiting == {
        "j3": "all 2 fitting agents are busy (4/4 slots used)",
        "j4": "all 2 fitting agents are busy (4/4 slots used)",
    }


def test_cordoned_draining_and_stale_agents_take_no_work(build):
    agents = [
        build.agent("node-1", cordoned=True),
        build.agent("node-2", heartbeat_age=40),
        build.agent("node-3", draining=True),
    ]
    plan = schedule_queued_jobs(
        [build.queued_job("j")], agents, build.t0, lease=timedelta(seconds=15)
    )
    assert plan.waiting == {
        "j": "no ready agent (node-1: cordoned; node-2: heartbeat 40s old; node-3: draining)"
    }
    assert plan.assignments == []


def test_memory_requirement(build):
    job = build.queued_job("big", capability_requirements={"min_memory_gb": 64})
    agents = [build.agent("node-1", memory_gb=23), build.agent("node-2", memory_gb=8)]
    plan = schedule_queued_jobs([job], agents, build.t0)
    assert plan.waiting == {"big": "needs 64 GB memory; the largest agent has 23 GB"}

    agents.append(build.agent("node-3", memory_gb=64))
    assert schedule_queued_jobs([job], agents, build.t0).assignments == [("big", "node-3")]


def test_disk_requirement(build):
    job = build.queued_job("wide", capability_requirements={"min_disk_space_gb": 500})
    agents = [build.agent("node-1", disk_gb=120.5)]
    plan = schedule_queued_jobs([job], agents, build.t0)
    assert plan.waiting == {
        "wide": "needs 500 GB free disk; the agent with the most has 120.5 GB free"
    }


def test_a_pinned_migration_job_runs_only_on_its_agent_and_says_why_it_waits(build):
    migration = {
        "migration_id": "m1",
        "disk_id": "d",
        "output_name": "vm.qcow2",
        "pinned_agent": "node-2",
    }
    pinned = build.queued_job("vm-repair", parameters={"migration": migration})
    agents = [build.agent("node-1", slots=4), build.agent("node-2", slots=1, running=1)]
    plan = schedule_queued_jobs([pinned], agents, build.t0)
    assert plan.assignments == []
    assert "busy" in plan.waiting["vm-repair"]
    free = [build.agent("node-1", slots=4), build.agent("node-2", slots=1)]
    assert schedule_queued_jobs([pinned], free, build.t0).assignments == [("vm-repair", "node-2")]
    gone = [build.agent("node-1", slots=4)]
    waiting = schedule_queued_jobs([pinned], gone, build.t0).waiting["vm-repair"]
    assert waiting == "waits for agent node-2 (it holds this migration's other outputs)"
