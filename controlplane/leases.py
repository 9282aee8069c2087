"""Agent leases and job deadlines: which active jobs need the control plane to step in.

Pure: active jobs, agents and the time in, a list of :class:`Verdict` out. The dispatcher
acts on them every tick:

* ``AGENT_LOST``: the job's agent missed its lease (no heartbeat for ``lease``) or is not
  registered. A control plane that just started counts the lease from its own start, so
  agents are not declared lost for the time the control plane itself was down.
* ``TIMEOUT``: the attempt has run past ``timeout_seconds`` plus a margin. The agent enforces
  the timeout itself; this is the backstop for an agent that went silent about the job.
* ``EVICT``: the job's agent is draining and its deadline passed: cancel it there, then
  requeue it (see :mod:`controlplane.retry`).
* ``CANCEL``: a cancel was asked for and not confirmed yet: ask the agent (again).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from controlplane.models import AgentRecord, JobRecord
from protocol.states import JobState

DEFAULT_TIMEOUT_MARGIN = timedelta(seconds=120)


class Action(StrEnum):
    AGENT_LOST = "AGENT_LOST"
    TIMEOUT = "TIMEOUT"
    EVICT = "EVICT"
    CANCEL = "CANCEL"


@dataclass(frozen=True)
class LeasePolicy:
    """How long an agent's heartbeat is good for, and the deadline backstop of jobs.

    ``timeout_scale`` multiplies every job's ``timeout_seconds``; it exists for tests (a
    60 s minimum timeout is too long to wait for) and is 1 in production.
    """

    lease: timedelta = timedelta(seconds=15)
    timeout_margin: timedelta = DEFAULT_TIMEOUT_MARGIN
    timeout_scale: float = 1.0


@dataclass(frozen=True)
class Verdict:
    job_id: str
    attempt: int
    agent: str
    action: Action
    message: str


def lease_expired(agent: AgentRecord, now: datetime, lease: timedelta, since: datetime) -> bool:
    """Whether ``agent`` missed its lease; heartbeats count from ``since`` at the earliest."""
    return now - max(agent.last_heartbeat, since) > lease


def job_deadline(job: JobRecord, policy: LeasePolicy) -> datetime | None:
    """When the control plane gives up on the running attempt; None before it started."""
    if job.started_at is None or job.state not in (JobState.RUNNING, JobState.PROGRESSING):
        return None
    timeout = job.spec.execution_policy.timeout_seconds * policy.timeout_scale
    return job.started_at + timedelta(seconds=timeout) + policy.timeout_margin


def review_active_jobs(
    jobs: Iterable[JobRecord],
    agents: Iterable[AgentRecord],
    now: datetime,
    policy: LeasePolicy,
    since: datetime,
) -> list[Verdict]:
    """What to do about each active (ASSIGNED, RUNNING, PROGRESSING) job, if anything.

    Args:
        jobs: the active jobs.
        agents: every registered agent.
        now: the current time.
        policy: lease and deadline settings.
        since: when this control plane started (leases count from then at the earliest).
    """
    by_name = {a.name: a for a in agents}
    verdicts = []
    for job in jobs:
        verdict = _review(job, by_name.get(job.assigned_agent or ""), now, policy, since)
        if verdict is not None:
            verdicts.append(verdict)
    return verdicts


def _review(
    job: JobRecord, agent: AgentRecord | None, now: datetime, policy: LeasePolicy, since: datetime
) -> Verdict | None:
    name = job.assigned_agent or "?"

    def verdict(action: Action, message: str) -> Verdict:
        return Verdict(job.job_id, job.attempt, name, action, message)

    if agent is None or lease_expired(agent, now, policy.lease, since):
        where = f"{job.phase or 'start'} at {job.progress_percent:.0f}%"
        if job.state is JobState.ASSIGNED:
            return verdict(Action.AGENT_LOST, f"agent {name} lost before the job started")
        return verdict(Action.AGENT_LOST, f"agent {name} lost during {where}")
    deadline = job_deadline(job, policy)
    if deadline is not None and now > deadline:
        limit = job.spec.execution_policy.timeout_seconds
        margin = int(policy.timeout_margin.total_seconds())
        return verdict(
            Action.TIMEOUT,
            f"no result from agent {name} within execution_policy.timeout_seconds "
            f"({limit} s) plus {margin} s; ended by the control plane",
        )
    if job.cancel_requested:
        return verdict(Action.CANCEL, "cancel requested")
    if agent.draining and agent.drain_deadline is not None and agent.drain_deadline <= now:
        return verdict(Action.EVICT, f"agent {name} is draining and its deadline passed")
    return None
