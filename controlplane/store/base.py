"""The job store interface: every implementation (SQLite, PostgreSQL) provides it.

Implementations refuse state transitions that :func:`protocol.states.check_transition`
rejects, commit every write before returning, and never block the event loop.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controlplane.models import AgentRecord, JobRecord, QueuedJob, QueueKind
from controlplane.store.migration_base import MigrationStore
from protocol.conversion import event_to_json
from protocol.gen.h2k.v1 import agent_pb2, job_pb2
from protocol.spec import JobSpec
from protocol.states import JobState

# States in which a job occupies a slot on its agent.
ACTIVE_STATES = frozenset({JobState.ASSIGNED, JobState.RUNNING, JobState.PROGRESSING})

# Fields a transition (or update_job) may change besides the state.
UPDATABLE_FIELDS = frozenset(
    {
        "attempt",
        "assigned_agent",
        "queue_reason",
        "result",
        "error",
        "started_at",
        "finished_at",
        "last_seq",
        "phase",
        "progress_percent",
        "cancel_requested",
    }
)


@dataclass(frozen=True)
class Assignment:
    """A queued job placed on an agent, as :meth:`JobStore.assign_jobs` stores it."""

    job_id: str
    agent: str
    attempt: int  # the attempt this assignment starts (the job's attempt + 1)

    @property
    def reason(self) -> str:
        """The history reason of the QUEUED -> ASSIGNED transition."""
        return f"assigned to agent {self.agent}"


@dataclass(frozen=True)
class ProgressWrite:
    """A run of one job's events that change no state, and the fields they move, as
    :meth:`JobStore.record_progress` stores it with the runs of other jobs."""

    job_id: str
    events: Sequence[job_pb2.ProgressEvent]
    last_seq: int
    phase: str
    progress_percent: float
    # The job as the writer knows it: when given, the run is stored only if the job is still
    # so (its last_seq, attempt and state unchanged since; another replica may have moved it).
    follows: JobMark | None = None


@dataclass(frozen=True)
class JobMark:
    """Where a job stood when a writer read it: the seq its next event follows, the attempt,
    the state."""

    last_seq: int
    attempt: int
    state: JobState


@dataclass(frozen=True)
class JobStatus:
    """What a job's relay needs to know of it after a progress write: is the attempt still
    this one, on this agent, and has a cancel been asked for."""

    state: JobState
    attempt: int
    assigned_agent: str | None
    cancel_requested: bool
    updated_at: datetime
    last_seq: int
    # False: the job was not where the write's ``follows`` said; nothing of it was stored.
    written: bool = True

    def matches(self, mark: JobMark | None) -> bool:
        """Whether a write that ``follows`` ``mark`` may be stored on this job."""
        return mark is None or (self.last_seq, self.attempt, self.state) == (
            mark.last_seq,
            mark.attempt,
            mark.state,
        )


@dataclass(frozen=True)
class JobPage:
    """One page of :meth:`JobStore.list_jobs`; ``next_offset`` is None on the last page."""

    jobs: list[JobRecord]
    next_offset: int | None


class JobStore(MigrationStore):
    """Durable jobs, their transitions and events, and registered agents."""

    # Whether several control planes may share this store. When False (SQLite) the lease
    # methods below are trivially true: the one control plane owns everything.
    replicated = False

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection; the store is unusable afterwards."""

    # --- jobs ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_job(
        self, spec: JobSpec, now: datetime, trace_context: str = ""
    ) -> tuple[JobRecord, bool]:
        """Store a validated spec as a QUEUED job, committed before returning.

        ``trace_context`` (a W3C traceparent) is kept with a new job so its dispatch joins
        the submit's trace; an existing job keeps its own.

        The job is inserted as CREATED and moved CREATED -> VALIDATED -> QUEUED, with a
        history row for each transition, in one transaction.

        Returns:
            The stored record and True, or the existing record and False when a job with the
            same job_id and the same fingerprint exists.

        Raises:
            AlreadyExists: a job with this job_id exists with a different spec.
        """

    @abc.abstractmethod
    async def create_jobs(
        self, specs: Sequence[JobSpec], now: datetime, trace_context: str = ""
    ) -> list[tuple[JobRecord, bool]]:
        """:meth:`create_job` for several specs (distinct job_ids), all or none.

        Raises:
            AlreadyExists: naming ``specs[i].job_id``, when one exists with a different
                spec; nothing is stored then.
        """

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> JobRecord:
        """The job with its history.

        Raises:
            NotFound: no such job.
        """

    @abc.abstractmethod
    async def list_jobs(
        self,
        states: Collection[JobState] | None = None,
        limit: int | None = 100,
        offset: int = 0,
        with_history: bool = True,
    ) -> JobPage:
        """Jobs in submission order, optionally only those in ``states``.

        ``with_history=False`` leaves every record's history empty (not read): for callers
        that look at the jobs' fields only, such as the supervisor's tick over active jobs.
        """

    @abc.abstractmethod
    async def queue_summary(self) -> list[QueueKind]:
        """The QUEUED jobs grouped by kind (:func:`controlplane.capabilities.needs_kind`)."""

    @abc.abstractmethod
    async def list_queued(
        self, kinds: Collection[str], limit: int, exclude: Collection[str] = ()
    ) -> list[QueuedJob]:
        """Up to ``limit`` QUEUED jobs of ``kinds`` (not in ``exclude``) in scheduling order.

        Scheduling order: priority (1 first), then submission time, then job id.
        """

    @abc.abstractmethod
    async def set_queue_reasons(
        self, reasons: Mapping[str, str], keep: Collection[str] = ()
    ) -> int:
        """Give every QUEUED job of each kind in ``reasons`` that kind's reason.

        Jobs in ``keep`` keep theirs. Returns how many jobs changed.
        """

    @abc.abstractmethod
    async def transition(
        self,
        job_id: str,
        to_state: JobState,
        reason: str,
        *,
        event: job_pb2.ProgressEvent | None = None,
        **updates: Any,
    ) -> JobRecord:
        """Move a job to ``to_state``, record the transition, and apply field updates.

        PROGRESSING -> PROGRESSING updates the fields without a history row. ``event`` (the
        job's event causing it) is stored in the same transaction, as :meth:`append_event`
        stores it (once per seq); when the transition is refused it is not stored either.

        Raises:
            NotFound: no such job.
            IllegalTransition: the state table does not allow it; nothing is changed.
            ValueError: an update names a field that cannot be updated.
        """

    @abc.abstractmethod
    async def assign_jobs(self, assignments: Sequence[Assignment]) -> list[JobRecord]:
        """Move every job of ``assignments`` that is QUEUED now to ASSIGNED, in ONE committed
        transaction (a scheduling pass is one store call, not one per job).

        Each moved job gets its agent, its new attempt, an empty queue reason and a history
        row, as :meth:`transition` would give it. A job that is no longer QUEUED (cancelled
        or assigned meanwhile, by this replica or another) or does not exist is left alone:
        no job is ever assigned twice.

        Returns:
            The records of the jobs moved, in the order of ``assignments``.
        """

    @abc.abstractmethod
    async def update_job(
        self, job_id: str, *, event: job_pb2.ProgressEvent | None = None, **updates: Any
    ) -> JobRecord:
        """Change fields of a job without changing its state (storing ``event`` with it, as
        :meth:`transition` does).

        Raises:
            NotFound: no such job.
        """

    async def update_progress(
        self, job_id: str, *, last_seq: int, phase: str, progress_percent: float
    ) -> JobRecord:
        """Record the latest event a job's agent reported."""
        return await self.update_job(
            job_id, last_seq=last_seq, phase=phase, progress_percent=progress_percent
        )

    @abc.abstractmethod
    async def running_jobs_by_agent(self) -> dict[str, list[str]]:
        """The ids of the ASSIGNED, RUNNING and PROGRESSING jobs of each agent."""

    async def running_jobs_of(self, agent: str) -> list[str]:
        """The ids of the ASSIGNED, RUNNING and PROGRESSING jobs of one agent (what each of
        its heartbeats is matched against), in :meth:`running_jobs_by_agent`'s order."""
        return (await self.running_jobs_by_agent()).get(agent, [])

    async def count_running_jobs(self) -> dict[str, int]:
        """How many slots each agent has in use (agents with none are absent)."""
        return {name: len(ids) for name, ids in (await self.running_jobs_by_agent()).items()}

    async def count_jobs_by_state(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, for metrics).

        This reads every job; implementations count in the database instead.
        """
        counts = dict.fromkeys(JobState, 0)
        for job in (await self.list_jobs(limit=None)).jobs:
            counts[job.state] += 1
        return counts

    # --- events -------------------------------------------------------------------------

    @abc.abstractmethod
    async def append_event(self, event: job_pb2.ProgressEvent) -> bool:
        """Store an event; False (and nothing stored) when (job_id, seq) is already there."""

    @abc.abstractmethod
    async def list_events(
        self, job_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[job_pb2.ProgressEvent]:
        """Stored events of a job with seq > after_seq, in seq order."""

    @abc.abstractmethod
    async def events_with_state(
        self, job_id: str, after_seq: int, limit: int | None = None
    ) -> tuple[JobState, list[job_pb2.ProgressEvent]]:
        """The job's state and its stored events with seq > after_seq, in seq order, read
        together: when the state is terminal, every event of the job is among them.

        What a watcher reads on each hint of a change: the state tells it whether to go on
        following, without reading the whole job.

        Raises:
            NotFound: no such job.
        """

    # --- agents -------------------------------------------------------------------------

    @abc.abstractmethod
    async def upsert_agent(self, agent: AgentRecord) -> AgentRecord:
        """Insert or replace an agent's registration, keeping its cordon and drain flags."""

    @abc.abstractmethod
    async def get_agent(self, name: str) -> AgentRecord:
        """The agent.

        Raises:
            NotFound: no such agent.
        """

    @abc.abstractmethod
    async def list_agents(self) -> list[AgentRecord]:
        """Every registered agent, by name."""

    @abc.abstractmethod
    async def record_heartbeat(
        self, name: str, now: datetime, capabilities: agent_pb2.Capabilities | None
    ) -> bool:
        """Refresh an agent's heartbeat (and capabilities); False when the agent is unknown."""

    @abc.abstractmethod
    async def set_agent_flags(
        self,
        name: str,
        *,
        cordoned: bool | None = None,
        draining: bool | None = None,
        drain_deadline: datetime | None = None,
    ) -> AgentRecord:
        """Cordon/uncordon or drain an agent (None leaves a flag as it is).

        Raises:
            NotFound: no such agent.
        """

    # --- several replicas (leases in database time; see controlplane/ownership.py) -------

    def start_change_feed(
        self, on_change: Callable[[str | None], None], on_live: Callable[[bool], None]
    ) -> None:
        """Hear of jobs changed by other replicas: ``on_change(job_id)``, or None for "any
        job may have changed"; ``on_live`` reports whether changes are being heard.

        A store only one control plane uses has nothing to report.
        """
        return None

    async def claim_stream(self, job_id: str, owner: str, lease: timedelta) -> bool:
        """Take or renew the lease on following a job's agent stream; False when another
        owner holds it and it has not run out (a job that is not active is free to take)."""
        return True

    async def claim_streams(
        self, job_ids: Sequence[str], owner: str, lease: timedelta
    ) -> list[str]:
        """:meth:`claim_stream` for several jobs in one transaction; returns those claimed."""
        return list(job_ids)

    async def renew_streams(self, owner: str, lease: timedelta) -> list[str]:
        """Extend every stream lease ``owner`` holds; returns their job ids."""
        return []

    async def unowned_active_jobs(self) -> list[str]:
        """Active jobs whose stream nobody holds a valid lease on."""
        return []

    async def release_streams(self, owner: str) -> None:
        """Give up every lease ``owner`` holds (on a graceful stop: others take over now)."""
        return None

    async def claim_role(self, role: str, owner: str, lease: timedelta) -> bool:
        """Take or renew the lease on a singleton role (the scheduler); False when another
        owner holds it and it has not run out."""
        return True

    async def grant_streams(self, grants: Mapping[str, str], lease: timedelta) -> list[str]:
        """Lease each job's stream to the owner given for it (``job_id -> owner``), in one
        transaction, where :meth:`claim_stream` by that owner would succeed; returns the
        job ids granted (the scheduler's pass, before the jobs become ASSIGNED)."""
        return list(grants)

    async def notify_dispatchers(self, names: Collection[str]) -> None:
        """Tell the dispatchers called ``names`` (through :meth:`start_dispatch_feed`) that
        they have something to do: a replica's owner name (streams were granted to it), or
        a role (whichever replica holds it: the scheduler, when slots were freed)."""
        return None

    def start_dispatch_feed(self, on_notice: Callable[[str | None], None]) -> None:
        """Call ``on_notice(name)`` for every :meth:`notify_dispatchers` of another replica,
        and ``on_notice(None)`` when notices may have been missed (the feed reconnected)."""
        return None

    async def renew_assigned_streams(self, owner: str, lease: timedelta) -> list[str]:
        """Extend ``owner``'s unexpired leases of ASSIGNED jobs; returns their job ids."""
        return []

    async def announce_replica(self, owner: str, lease: timedelta) -> None:
        """Say that replica ``owner`` is alive for ``lease`` (database time)."""
        return None

    async def stream_loads(self) -> dict[str, int]:
        """Each live replica (see :meth:`announce_replica`) -> how many active jobs' streams
        it holds unexpired leases on."""
        return {}

    # --- progress in batches ------------------------------------------------------------

    @abc.abstractmethod
    async def record_events(
        self, job_id: str, events: Sequence[job_pb2.ProgressEvent], **updates: Any
    ) -> JobRecord:
        """Store several events of one job and change fields of the job, in ONE committed
        transaction (one commit for a run of progress events instead of two per event).

        The job's state does not change (state changes go through :meth:`transition`). An
        event whose (job_id, seq) is stored already is skipped, as :meth:`append_event` does.

        Returns:
            The job as it is after the commit.

        Raises:
            NotFound: no such job (nothing is stored).
            ValueError: an event of another job, or an update naming a field that cannot be
                updated (nothing is stored).
        """

    @abc.abstractmethod
    async def record_progress(self, writes: Sequence[ProgressWrite]) -> dict[str, JobStatus]:
        """Store the runs of progress events of many jobs, and the fields each moves, in ONE
        committed transaction: a wave's relays share a write instead of one write per job.

        Each job's row gets ``last_seq``, ``phase`` and ``progress_percent`` (and
        ``updated_at``); its events are stored, an event whose (job_id, seq) is stored already
        being skipped. No state changes, and no job is read back with its history.

        A write that ``follows`` a :class:`JobMark` is stored only if the job is still there
        (another replica may have moved it since the writer read it); otherwise nothing of
        it is stored and its status says ``written=False``.

        Returns:
            Each found job's status as committed (``last_seq`` as it was before this write);
            a job the store does not have is left out (nothing of it is stored).

        Raises:
            ValueError: a write names a job twice, or holds an event of another job (nothing
                is stored).
        """


def progress_rows(writes: Sequence[ProgressWrite]) -> list[tuple[str, int, str]]:
    """The (job_id, seq, stored body) rows of :meth:`JobStore.record_progress`' events, after
    checking its writes.

    Raises:
        ValueError: a job written twice, or an event of another job in a job's run.
    """
    seen: set[str] = set()
    bodies: list[tuple[str, int, str]] = []
    for write in writes:
        if write.job_id in seen:
            raise ValueError(f"job {write.job_id} is written twice in one progress write")
        seen.add(write.job_id)
        bodies.extend(event_rows(write.job_id, write.events, {}))
    return bodies


def event_rows(
    job_id: str, events: Sequence[job_pb2.ProgressEvent], updates: dict[str, Any]
) -> list[tuple[str, int, str]]:
    """The (job_id, seq, stored body) rows of :meth:`JobStore.record_events`' events, after
    checking its arguments.

    Raises:
        ValueError: an event of another job, or an update that is not a field update.
    """
    unknown = set(updates) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"cannot update job fields {sorted(unknown)} with events")
    foreign = sorted({e.job_id for e in events if e.job_id != job_id})
    if foreign:
        raise ValueError(f"events of job {job_id} cannot include events of {foreign}")
    return [(job_id, e.seq, event_to_json(e)) for e in events]
