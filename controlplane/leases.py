"""Agent leases and job deadlines: whether an agent is alive, and which active jobs need the
control plane to step in.

Pure: agents, jobs and the time in, answers out. :func:`agent_liveness` is the one definition
of an agent's state (READY, CORDONED, DRAINING, LOST) that the registry shows, the scheduler
places by and the supervisor ends attempts by. :func:`review_active_jobs` gives a list of
:class:`Verdict`; the dispatcher acts on them every tick:

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
from typing import Protocol

from controlplane.models import AgentRecord, JobRecord
from protocol.errors import ErrorCode
from protocol.states import JobState

DEFAULT_TIMEOUT_MARGIN = timedelta(seconds=120)


class Action(StrEnum):
    """What the control plane does about a job; the first two end the attempt with that code."""

    AGENT_LOST = ErrorCode.AGENT_LOST.value
    TIMEOUT = ErrorCode.TIMEOUT.value
    EVICT = "EVICT"
    CANCEL = "CANCEL"

    @property
    def ends_attempt_with(self) -> ErrorCode | None:
        """The error code the attempt ends with, or None when the agent is only asked."""
        return ErrorCode(self.value) if self in (Action.AGENT_LOST, Action.TIMEOUT) else None


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


class AgentLiveness(StrEnum):
    """An agent's state as everyone sees it; only READY agents take new work."""

    READY = "READY"
    CORDONED = "CORDONED"
    DRAINING = "DRAINING"
    LOST = "LOST"


class AgentFlags(Protocol):
    """What liveness is judged by (a stored agent or the scheduler's view of one)."""

    @property
    def last_heartbeat(self) -> datetime: ...
    @property
    def cordoned(self) -> bool: ...
    @property
    def draining(self) -> bool: ...


def heartbeat_age(agent: AgentFlags, now: datetime, since: datetime | None = None) -> timedelta:
    """How old the agent's last heartbeat is; counted from ``since`` at the earliest."""
    counted_from = agent.last_heartbeat if since is None else max(agent.last_heartbeat, since)
    return now - counted_from


def agent_liveness(
    agent: AgentFlags, now: datetime, lease: timedelta, since: datetime | None = None
) -> AgentLiveness:
    """LOST when the lease ran out (no heartbeat for ``lease``), else DRAINING, CORDONED, READY.

    Args:
        agent: the agent's last heartbeat and admin flags.
        now: the current time.
        lease: how long a heartbeat is good for.
        since: when the caller started watching (a control plane that just started counts
            leases from its own start, so agents are not lost for the time it was down).
    """
    if heartbeat_age(agent, now, since) > lease:
        return AgentLiveness.LOST
    if agent.draining:
        return AgentLiveness.DRAINING
    if agent.cordoned:
        return AgentLiveness.CORDONED
    return AgentLiveness.READY


def not_ready_reason(agent: AgentFlags, now: datetime, lease: timedelta) -> str | None:
    """Why the agent takes no new work (for a job's queue reason), or None when it is READY."""
    liveness = agent_liveness(agent, now, lease)
    if liveness is AgentLiveness.LOST:
        return f"heartbeat {int(heartbeat_age(agent, now).total_seconds())}s old"
    if liveness is AgentLiveness.READY:
        return None
    return liveness.value.lower()


def lease_expired(agent: AgentFlags, now: datetime, lease: timedelta, since: datetime) -> bool:
    """Whether ``agent`` missed its lease; heartbeats count from ``since`` at the earliest."""
    return agent_liveness(agent, now, lease, since) is AgentLiveness.LOST


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
