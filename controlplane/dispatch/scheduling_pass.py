"""A scheduling pass over the stored queue: which queued jobs start now, and why the rest wait.

The queue is read by kind of job (:func:`controlplane.capabilities.needs_kind`: jobs of one
kind fit exactly the same agents). A pass reads a summary of the queue by kind, judges each
kind once against the agents, then reads only jobs of kinds some agent can take now, in
scheduling order, no more than there are free slots, and places them with the pure scheduler
(:mod:`controlplane.placement`). A pass costs what it places, not what waits; jobs no agent can
take never hold up the others. The reason a kind's jobs wait is one per kind.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from controlplane.models import AgentRecord, QueuedJob, QueueKind
from controlplane.placement import (
    AgentView,
    Judgement,
    agent_view,
    has_room,
    judge,
    place,
    waiting_reason,
)
from controlplane.store import JobStore
from protocol.spec import JobSpec

# Specs kept to judge kinds of queued jobs by (few kinds exist; the bound is a backstop).
MAX_KINDS_REMEMBERED = 1024


@dataclass
class PassOutcome:
    """What one pass decided: jobs to start (with their agent) and why each kind waits."""

    placed: list[tuple[QueuedJob, AgentRecord]] = field(default_factory=list)
    # kind -> why its queued jobs wait (kinds with room left are absent)
    reasons: dict[str, str] = field(default_factory=dict)
    # kinds among ``reasons`` that wait only because every agent able to run them is full
    busy: frozenset[str] = frozenset()


class SchedulingPass:
    """Runs scheduling passes against the store; remembers one spec per kind of job."""

    def __init__(self, store: JobStore, lease: timedelta) -> None:
        self._store = store
        self._lease = lease
        self._kinds: dict[str, JobSpec] = {}

    async def run(self, held_back: Collection[str], now: datetime) -> PassOutcome:
        """One pass; jobs in ``held_back`` are neither placed nor read."""
        summary = await self._store.queue_summary()
        if not summary:
            return PassOutcome()
        agents = {a.name: a for a in await self._store.list_agents()}
        running = await self._store.count_running_jobs()
        views = [agent_view(a, running.get(a.name, 0)) for a in agents.values()]
        specs = {k.kind: await self._kind_spec(k) for k in summary}
        judged = {k: judge(s, views, now, self._lease) for k, s in specs.items() if s is not None}
        placed, load = await self._place(judged, views, held_back)
        reasons = {k: r for k, j in judged.items() if (r := waiting_reason(j, load)) is not None}
        busy = frozenset(k for k in reasons if judged[k][1] is None)
        return PassOutcome([(job, agents[name]) for job, name in placed], reasons, busy)

    async def _place(
        self, judged: dict[str, Judgement], views: list[AgentView], held_back: Collection[str]
    ) -> tuple[list[tuple[QueuedJob, str]], dict[str, int]]:
        """Read queued jobs of kinds with room, in scheduling order, and place them.

        Returns the placements and each agent's load after them.
        """
        load = {v.name: v.running_jobs for v in views}
        placed: list[tuple[QueuedJob, str]] = []
        seen = set(held_back)
        while True:
            open_kinds = [k for k, j in judged.items() if has_room(j, load)]
            fitting = {a.name: a for k in open_kinds for a in judged[k][0]}
            room = sum(a.max_concurrent_jobs - load[a.name] for a in fitting.values())
            if room <= 0:
                return placed, load
            batch = await self._store.list_queued(open_kinds, room, exclude=tuple(seen))
            current = [replace(v, running_jobs=load[v.name]) for v in views]
            plan, load = place([(j.job_id, j.kind) for j in batch], judged, current)
            by_id = {j.job_id: j for j in batch}
            placed += [(by_id[job_id], name) for job_id, name in plan.assignments]
            seen.update(by_id)
            # Done when the queue of those kinds ran dry or nothing more fits; otherwise the
            # jobs left waiting used up some kind's room: read on for the other kinds.
            if len(batch) < room or not plan.assignments:
                return placed, load

    async def _kind_spec(self, kind: QueueKind) -> JobSpec | None:
        """A spec of this kind of job (all of a kind have the same needs); None: none left."""
        spec = self._kinds.get(kind.kind)
        if spec is None:
            sample = await self._store.list_queued([kind.kind], 1)
            if not sample:
                return None  # placed or cancelled since the summary was read
            spec = (await self._store.get_job(sample[0].job_id)).spec
            if len(self._kinds) >= MAX_KINDS_REMEMBERED:
                self._kinds.clear()
            self._kinds[kind.kind] = spec
        return spec
