"""Placement: which queued job runs on which agent, and why the others wait.

Pure: job specs and agent views in, a plan out; no gRPC, no database, no clock of its own.
:func:`judge` decides which ready agents can run a kind of job, :func:`place` assigns jobs in
scheduling order to the least loaded of them. The scheduling pass that feeds it from the store
is :mod:`controlplane.dispatch.scheduling_pass`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controlplane.capabilities import GIB, capability_needs, format_gib
from controlplane.leases import not_ready_reason
from controlplane.models import AgentRecord
from protocol.migration_jobs import pinned_agent
from protocol.spec import JobSpec

DEFAULT_LEASE = timedelta(seconds=15)


@dataclass(frozen=True)
class AgentView:
    """What the scheduler knows about one agent."""

    name: str
    capabilities: frozenset[str]
    max_concurrent_jobs: int
    running_jobs: int
    last_heartbeat: datetime
    memory_total_bytes: int = 0
    disk_free_bytes: int = 0
    cordoned: bool = False
    draining: bool = False


_SizeOf = Callable[[AgentView], int]


@dataclass
class SchedulePlan:
    """Assignments in the order to dispatch them, and the reason each other job waits."""

    assignments: list[tuple[str, str]] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)


# Per kind of job: the ready agents able to run it, or none and the first reason why not.
Judgement = tuple[list[AgentView], str | None]


def place(
    ordered: Sequence[tuple[str, str]],
    judged: Mapping[str, Judgement],
    agents: Sequence[AgentView],
) -> tuple[SchedulePlan, dict[str, int]]:
    """Place jobs given as (job_id, kind) in scheduling order; least loaded agent wins.

    Returns the plan and each agent's load after it.
    """
    plan = SchedulePlan()
    load = {agent.name: agent.running_jobs for agent in agents}
    for job_id, kind in ordered:
        fitting, reason = judged[kind]
        free = [a for a in fitting if load[a.name] < a.max_concurrent_jobs]
        if not free:
            plan.waiting[job_id] = reason or _busy_reason(fitting, load)
            continue
        best = min(free, key=lambda a: (load[a.name] / a.max_concurrent_jobs, a.name))
        load[best.name] += 1
        plan.assignments.append((job_id, best.name))
    return plan, load


def waiting_reason(judgement: Judgement, load: Mapping[str, int]) -> str | None:
    """Why jobs of a kind wait with agents loaded as ``load``; None when one could start."""
    fitting, reason = judgement
    if reason is not None:
        return reason
    if has_room(judgement, load):
        return None
    return _busy_reason(fitting, dict(load))


def has_room(judgement: Judgement, load: Mapping[str, int]) -> bool:
    """Whether some agent able to run this kind of job has a free slot."""
    return any(load[a.name] < a.max_concurrent_jobs for a in judgement[0])


def judge(spec: JobSpec, agents: Sequence[AgentView], now: datetime, lease: timedelta) -> Judgement:
    """The ready agents able to run the job, or none and the first reason why not."""
    if not agents:
        return [], "no agent registered"
    capable = list(agents)
    pinned = pinned_agent(spec)
    if pinned is not None:
        # A migration's job runs where the VM's other outputs are.
        capable = [a for a in capable if a.name == pinned]
        if not capable:
            return [], f"waits for agent {pinned} (it holds this migration's other outputs)"
    for need in capability_needs(spec):
        capable = [a for a in capable if need.met_by(a.capabilities)]
        if not capable:
            if any(need.met_by(a.capabilities) for a in agents):
                return [], f"no agent has {need.describe()} together with the other needs"
            return [], f"no agent has {need.describe()}"
    reqs = spec.capability_requirements
    if reqs.min_memory_gb is not None:
        capable, reason = _filter_size(
            capable,
            reqs.min_memory_gb,
            lambda a: a.memory_total_bytes,
            "needs {need} GB memory; the largest agent has {best}",
        )
        if reason:
            return [], reason
    if reqs.min_disk_space_gb is not None:
        capable, reason = _filter_size(
            capable,
            reqs.min_disk_space_gb,
            lambda a: a.disk_free_bytes,
            "needs {need} GB free disk; the agent with the most has {best} free",
        )
        if reason:
            return [], reason
    not_ready = {a.name: not_ready_reason(a, now, lease) for a in capable}
    ready = [a for a in capable if not_ready[a.name] is None]
    if not ready:
        details = "; ".join(f"{name}: {why}" for name, why in sorted(not_ready.items()))
        return [], f"no ready agent ({details})"
    return ready, None


def _filter_size(
    agents: list[AgentView],
    needed_gb: int,
    size_of: _SizeOf,
    shortfall: str,
) -> tuple[list[AgentView], str | None]:
    fitting = [a for a in agents if size_of(a) >= needed_gb * GIB]
    if fitting:
        return fitting, None
    best = max(size_of(a) for a in agents)
    return [], shortfall.format(need=needed_gb, best=format_gib(best))


def _busy_reason(fitting: list[AgentView], load: dict[str, int]) -> str:
    used = sum(load[a.name] for a in fitting)
    slots = sum(a.max_concurrent_jobs for a in fitting)
    noun = "agent is" if len(fitting) == 1 else f"{len(fitting)} fitting agents are"
    prefix = "the fitting " if len(fitting) == 1 else "all "
    return f"{prefix}{noun} busy ({used}/{slots} slots used)"


def agent_view(agent: AgentRecord, running_jobs: int) -> AgentView:
    """The scheduler's view of a stored agent with ``running_jobs`` slots in use."""
    caps = agent.capabilities
    return AgentView(
        name=agent.name,
        capabilities=agent.available_capabilities(),
        max_concurrent_jobs=agent.max_concurrent_jobs,
        running_jobs=running_jobs,
        last_heartbeat=agent.last_heartbeat,
        memory_total_bytes=caps.memory_total_bytes,
        disk_free_bytes=caps.disk_free_bytes,
        cordoned=agent.cordoned,
        draining=agent.draining,
    )
