"""What happens after an attempt ends badly (retry.py), and when the control plane steps in
(leases.py): lost agents, deadlines, drains, pending cancels."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from controlplane.leases import Action, LeasePolicy, review_active_jobs
from controlplane.models import AgentRecord, JobRecord, Transition
from controlplane.retry import Outcome, RetryPolicy, decide, next_attempt_at, retries_used
from protocol.gen.h2k.v1 import agent_pb2
from protocol.states import JobState
from tests.support.builders import T0, queued_job

POLICY = RetryPolicy(backoff_base=timedelta(seconds=2), backoff_max=timedelta(seconds=10))


def running_job(
    job_id: str = "job-1",
    *,
    retry_count: int = 2,
    idempotent: bool = True,
    attempt: int = 1,
    agent: str = "node-1",
    started_seconds_ago: float = 10,
    timeout_seconds: int = 60,
    **fields: object,
) -> JobRecord:
    job = queued_job(
        job_id,
        execution_policy={
            "retry_count": retry_count,
            "idempotent": idempotent,
            "timeout_seconds": timeout_seconds,
        },
    )
    return dataclasses.replace(
        job,
        state=JobState.PROGRESSING,
        attempt=attempt,
        assigned_agent=agent,
        started_at=T0 - timedelta(seconds=started_seconds_ago),
        phase="convert",
        progress_percent=42.0,
        **fields,  # type: ignore[arg-type]
    )


def retried(job: JobRecord, reason: str, attempt: int = 1) -> Transition:
    return Transition(JobState.PROGRESSING, JobState.RETRYING, T0, reason, attempt)


# --- retry.py -------------------------------------------------------------------------


def test_a_lost_agent_is_retried_with_exponential_backoff_until_retries_run_out():
    job = running_job(retry_count=2)
    first = decide(job, "AGENT_LOST", "agent node-1 lost during convert at 42%", POLICY)
    assert first.outcome is Outcome.RETRY and first.state is JobState.RETRYING
    assert first.delay == timedelta(seconds=2)
    assert first.reason == (
        "retry 1 of 2 in 2s after attempt 1: agent node-1 lost during convert at 42%"
    )

    job.history.append(retried(job, first.reason))
    job.attempt = 2
    second = decide(job, "TOOL_FAILED", "qemu-img died", POLICY)
    assert second.outcome is Outcome.RETRY and second.delay == timedelta(seconds=4)

    job.history.append(retried(job, second.reason, attempt=2))
    job.attempt = 3
    assert retries_used(job) == 2
    last = decide(job, "AGENT_LOST", "agent node-2 lost during convert at 7%", POLICY)
    assert last.outcome is Outcome.FAIL and last.state is JobState.FAILED
    assert last.reason.endswith("(no retry left: retry_count is 2)")


@pytest.mark.parametrize("code", ["TIMEOUT", "INPUT_NOT_FOUND", "PATH_NOT_ALLOWED", "UNSAFE_IMAGE"])
def test_failures_another_attempt_would_repeat_are_not_retried(code):
    assert decide(running_job(), code, "no", POLICY).outcome is Outcome.FAIL


def test_a_job_that_is_not_idempotent_is_never_run_twice():
    job = running_job(idempotent=False)
    assert decide(job, "AGENT_LOST", "lost", POLICY).outcome is Outcome.FAIL
    assert decide(job, "AGENT_SHUTDOWN", "stopping", POLICY).outcome is Outcome.FAIL
    assert decide(job, "CANCELLED", "drained", POLICY, evicted=True).outcome is Outcome.FAIL


def test_drain_and_shutdown_requeue_without_using_a_retry():
    job = running_job(retry_count=0)
    for decision in (
        decide(job, "AGENT_SHUTDOWN", "agent node-1 shut down during convert at 3%", POLICY),
        decide(job, "CANCELLED", "drain deadline passed", POLICY, evicted=True),
    ):
        assert decision.outcome is Outcome.REQUEUE and decision.reason.startswith("requeued: ")
        job.history.append(retried(job, decision.reason))
    assert retries_used(job) == 0


def test_a_requested_cancel_wins_and_a_lost_agent_confirms_it():
    job = running_job(cancel_requested=True)
    assert decide(job, "CANCELLED", "operator", POLICY).outcome is Outcome.CANCEL
    lost = decide(job, "AGENT_LOST", "agent node-1 lost during convert at 42%", POLICY)
    assert lost.outcome is Outcome.CANCEL and lost.state is JobState.CANCELLED
    assert lost.reason == "cancelled: agent node-1 lost during convert at 42%"
    assert decide(job, "TOOL_FAILED", "broke first", POLICY).outcome is Outcome.FAIL


def test_a_retrying_job_is_due_after_its_backoff_a_requeued_one_at_once():
    job = running_job()
    assert next_attempt_at(job, POLICY) is None
    job.state = JobState.RETRYING
    job.history.append(retried(job, "retry 1 of 2 in 2s after attempt 1: lost"))
    assert next_attempt_at(job, POLICY) == T0 + timedelta(seconds=2)
    job.history.append(retried(job, "requeued: attempt 2: drained", attempt=2))
    assert next_attempt_at(job, POLICY) == T0


def test_backoff_is_capped():
    assert POLICY.backoff(10) == timedelta(seconds=10)


# --- leases.py ------------------------------------------------------------------------

LEASES = LeasePolicy(lease=timedelta(seconds=15), timeout_margin=timedelta(seconds=30))


def agent_record(name: str = "node-1", heartbeat_age: float = 1, **flags: object) -> AgentRecord:
    return AgentRecord(
        name=name,
        address="127.0.0.1:1",
        capabilities=agent_pb2.Capabilities(),
        max_concurrent_jobs=2,
        registered_at=T0 - timedelta(hours=1),
        last_heartbeat=T0 - timedelta(seconds=heartbeat_age),
        **flags,  # type: ignore[arg-type]
    )


def test_a_healthy_job_needs_nothing():
    assert review_active_jobs([running_job()], [agent_record()], T0, LEASES, T0) == []


def test_an_agent_past_its_lease_is_lost_and_the_verdict_says_where_the_job_was():
    late = T0 - timedelta(minutes=5)
    (verdict,) = review_active_jobs(
        [running_job()], [agent_record(heartbeat_age=16)], T0, LEASES, late
    )
    assert verdict.action is Action.AGENT_LOST
    assert verdict.message == "agent node-1 lost during convert at 42%"
    gone = review_active_jobs([running_job(agent="node-9")], [agent_record()], T0, LEASES, late)
    assert [v.action for v in gone] == [Action.AGENT_LOST]


def test_a_restarted_control_plane_counts_leases_from_its_own_start():
    stale = [agent_record(heartbeat_age=600)]
    just_started = T0 - timedelta(seconds=5)
    assert review_active_jobs([running_job()], stale, T0, LEASES, just_started) == []


def test_an_attempt_past_its_timeout_and_margin_is_ended_even_if_the_agent_heartbeats():
    job = running_job(timeout_seconds=60, started_seconds_ago=89)
    assert review_active_jobs([job], [agent_record()], T0, LEASES, T0) == []
    job = running_job(timeout_seconds=60, started_seconds_ago=91)
    (verdict,) = review_active_jobs([job], [agent_record()], T0, LEASES, T0)
    assert verdict.action is Action.TIMEOUT
    assert "execution_policy.timeout_seconds (60 s) plus 30 s" in verdict.message


def test_the_timeout_scale_shortens_deadlines_for_tests():
    scaled = dataclasses.replace(LEASES, timeout_scale=0.1)
    job = running_job(timeout_seconds=60, started_seconds_ago=37)
    assert [v.action for v in review_active_jobs([job], [agent_record()], T0, scaled, T0)] == [
        Action.TIMEOUT
    ]


def test_drains_past_their_deadline_evict_and_pending_cancels_are_sent_again():
    draining = agent_record(draining=True, drain_deadline=T0 + timedelta(minutes=1))
    assert review_active_jobs([running_job()], [draining], T0, LEASES, T0) == []
    overdue = agent_record(draining=True, drain_deadline=T0 - timedelta(seconds=1))
    (verdict,) = review_active_jobs([running_job()], [overdue], T0, LEASES, T0)
    assert verdict.action is Action.EVICT
    (verdict,) = review_active_jobs(
        [running_job(cancel_requested=True)], [agent_record()], T0, LEASES, T0
    )
    assert verdict.action is Action.CANCEL


@pytest.mark.parametrize("code", ["OUT_OF_SPACE", "STALLED"])
def test_node_faults_of_the_output_disk_and_a_stalled_tool_are_retried(code: str):
    # A full output disk or a hung source read is this node's trouble: another try may not be.
    assert decide(running_job(), code, "no room", POLICY).outcome is Outcome.RETRY
