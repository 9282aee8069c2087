"""The SQLite job store: one file, WAL, synchronous=FULL, one dedicated thread.

Every call runs on the thread that owns the connection, and writes share group commits
(:mod:`controlplane.store.sqlite_thread`). Each write is one committed transaction before the
awaiting coroutine resumes. What is written is decided in :mod:`~controlplane.store.rules`
and :mod:`~controlplane.store.rows`, as for PostgreSQL; this module is SQLite's SQL.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from controlplane.models import AgentRecord, JobRecord, QueuedJob, QueueKind
from controlplane.store import rows, rules
from controlplane.store.base import (
    ACTIVE_STATES,
    Assignment,
    JobPage,
    JobStatus,
    JobStore,
    ProgressWrite,
    event_rows,
    progress_rows,
)
from controlplane.store.sqlite_migrations import SqliteMigrations
from controlplane.store.sqlite_schema import migrate
from controlplane.store.sqlite_thread import StoreThread
from protocol.conversion import event_from_json, event_to_json, utcnow
from protocol.errors import NotFound
from protocol.gen.h2k.v1 import agent_pb2, job_pb2
from protocol.spec import JobSpec
from protocol.states import JobState

log = logging.getLogger(__name__)

# Job ids per `IN (...)` list (SQLite allows 32,766 parameters; this keeps statements short).
_IN_LIST_CHUNK = 500


class SqliteCodec(rows.Codec):
    """SQLite keeps timestamps as ISO 8601 text (microseconds) and flags as 0 or 1."""

    mark = "?"

    def encode_time(self, value: datetime) -> Any:
        return value.isoformat(timespec="microseconds")

    def decode_time(self, value: Any) -> datetime:
        return datetime.fromisoformat(value)

    def encode_flag(self, value: bool) -> Any:
        return int(value)


CODEC = SqliteCodec()


def _marks(values: Collection[Any]) -> str:
    return CODEC.marks(len(values))


class SqliteStore(SqliteMigrations, JobStore):
    """A :class:`JobStore` in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = StoreThread()
        self._codec = CODEC

    @property
    def _db(self) -> sqlite3.Connection:
        return self._thread.db

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        await self._thread.run(self._open)

    def _open(self) -> None:
        conn = self._thread.connect(self.path)
        migrate(conn)
        self._thread.conn = conn
        self._fill_in_kinds()
        log.info("store opened path=%s", self.path)

    async def close(self) -> None:
        await self._thread.close()

    # --- jobs ---------------------------------------------------------------------------

    async def create_job(
        self, spec: JobSpec, now: datetime, trace_context: str = ""
    ) -> tuple[JobRecord, bool]:
        job = rows.new_job(spec, now, trace_context, CODEC)
        return await self._thread.batched(
            functools.partial(self._insert_job, job), functools.partial(self._created, job)
        )

    def _insert_job(self, job: rows.NewJob) -> str | None:
        """Insert a new job, queued, with its history, unless its id exists; returns the
        existing fingerprint."""
        inserted = self._db.execute(rows.insert_job_sql(CODEC), job.values).fetchall()
        if not inserted:
            row = self._db.execute(
                "SELECT fingerprint FROM jobs WHERE job_id = ?", (job.record.job_id,)
            ).fetchone()
            return str(row["fingerprint"])
        self._db.executemany(rows.insert_history_sql(CODEC), job.history)
        return None

    async def create_jobs(
        self, specs: Sequence[JobSpec], now: datetime, trace_context: str = ""
    ) -> list[tuple[JobRecord, bool]]:
        batch = [rows.new_job(spec, now, trace_context, CODEC) for spec in specs]
        return await self._thread.batched(
            functools.partial(self._insert_jobs, batch),
            lambda existing: [self._created(j, e) for j, e in zip(batch, existing, strict=True)],
        )

    def _insert_jobs(self, jobs: list[rows.NewJob]) -> list[str | None]:
        """Insert every new job; a conflict raises, and the caller's savepoint undoes all."""
        existing = []
        for index, job in enumerate(jobs):
            fingerprint = self._insert_job(job)
            rules.check_resubmission(f"specs[{index}].job_id", job.record.spec, fingerprint)
            existing.append(fingerprint)
        return existing

    def _created(self, job: rows.NewJob, existing: str | None) -> tuple[JobRecord, bool]:
        """The answer of a committed submit; ``existing`` is the fingerprint already stored."""
        rules.check_resubmission("job_id", job.record.spec, existing)
        if existing is None:
            # What was just committed, known without reading it back.
            return job.record, True
        return self._load(job.record.job_id), False

    async def get_job(self, job_id: str) -> JobRecord:
        return await self._thread.run(self._load, job_id)

    def _load(self, job_id: str, spec: JobSpec | None = None) -> JobRecord:
        row = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return self._record(row, spec)

    def _record(self, row: sqlite3.Row, spec: JobSpec | None = None) -> JobRecord:
        history = [
            rows.transition_record(h, CODEC)
            for h in self._db.execute(
                "SELECT * FROM job_transitions WHERE job_id = ? ORDER BY id", (row["job_id"],)
            )
        ]
        return rows.job_record(row, history, CODEC, spec)

    async def list_jobs(
        self,
        states: Collection[JobState] | None = None,
        limit: int | None = 100,
        offset: int = 0,
        with_history: bool = True,
    ) -> JobPage:
        return await self._thread.run(
            self._list_jobs, tuple(states or ()), limit, offset, with_history
        )

    def _list_jobs(
        self, states: tuple[JobState, ...], limit: int | None, offset: int, with_history: bool
    ) -> JobPage:
        sql = "SELECT * FROM jobs"
        params: list[Any] = []
        if states:
            sql += f" WHERE state IN ({_marks(states)})"
            params.extend(s.value for s in states)
        # One row more than asked tells whether another page exists.
        sql += " ORDER BY submitted_at, job_id LIMIT ? OFFSET ?"
        params.extend([-1 if limit is None else limit + 1, offset])
        found = self._db.execute(sql, params).fetchall()
        more = limit is not None and len(found) > limit
        if with_history:
            jobs = [self._record(r) for r in found[:limit]]
        else:
            jobs = [rows.job_record(r, [], CODEC) for r in found[:limit]]
        return JobPage(jobs=jobs, next_offset=offset + len(jobs) if more else None)

    # --- the queue, as the scheduler reads it ---------------------------------------------

    def _fill_in_kinds(self) -> None:
        """Give unfinished jobs stored before schema version 3 their kind."""
        live = [s.value for s in rules.LIVE_STATES]
        found = self._db.execute(
            f"SELECT job_id, spec FROM jobs WHERE state IN ({_marks(live)}) AND needs_kind = ''",
            live,
        ).fetchall()
        if not found:
            return
        with self._thread.write() as conn:
            conn.executemany(
                "UPDATE jobs SET needs_kind = ? WHERE job_id = ?", rows.missing_kinds(found)
            )
        log.info("job kinds filled in jobs=%d", len(found))

    async def queue_summary(self) -> list[QueueKind]:
        return await self._thread.run(self._queue_summary)

    def _queue_summary(self) -> list[QueueKind]:
        found = self._db.execute(
            f"SELECT {rows.QUEUE_SUMMARY_COLUMNS} "
            "FROM jobs INDEXED BY jobs_by_kind WHERE state = ? GROUP BY needs_kind",
            (JobState.QUEUED.value,),
        )
        return [rows.queue_kind(r, CODEC) for r in found]

    async def list_queued(
        self, kinds: Collection[str], limit: int, exclude: Collection[str] = ()
    ) -> list[QueuedJob]:
        return await self._thread.run(self._list_queued, tuple(kinds), limit, tuple(exclude))

    def _list_queued(
        self, kinds: tuple[str, ...], limit: int, exclude: tuple[str, ...]
    ) -> list[QueuedJob]:
        if not kinds or limit <= 0:
            return []
        sql = (
            f"SELECT {rows.QUEUED_JOB_COLUMNS} FROM jobs "
            f"INDEXED BY jobs_queue WHERE state = ? AND needs_kind IN ({_marks(kinds)}) "
        )
        params: list[Any] = [JobState.QUEUED.value, *kinds]
        if exclude:
            sql += f"AND job_id NOT IN ({_marks(exclude)}) "
            params.extend(exclude)
        sql += "ORDER BY priority, submitted_at, job_id LIMIT ?"
        params.append(limit)
        return [rows.queued_job(r, CODEC) for r in self._db.execute(sql, params)]

    async def set_queue_reasons(
        self, reasons: Mapping[str, str], keep: Collection[str] = ()
    ) -> int:
        return await self._thread.batched(
            functools.partial(self._set_queue_reasons, dict(reasons), tuple(keep)), lambda n: n
        )

    def _set_queue_reasons(self, reasons: dict[str, str], keep: tuple[str, ...]) -> int:
        changed = 0
        spare = f" AND job_id NOT IN ({_marks(keep)})" if keep else ""
        now = CODEC.encode_time(utcnow())
        # "<" and ">" rather than "!=": each is a range of the index, so a pass that changes
        # nothing reads nothing.
        for kind, reason in reasons.items():
            for differs in ("<", ">"):
                cursor = self._db.execute(
                    "UPDATE jobs INDEXED BY jobs_by_kind SET queue_reason = ?, updated_at = ? "
                    f"WHERE state = ? AND needs_kind = ? AND queue_reason {differs} ?{spare}",
                    (reason, now, JobState.QUEUED.value, kind, reason, *keep),
                )
                changed += cursor.rowcount
        return changed

    async def transition(
        self,
        job_id: str,
        to_state: JobState,
        reason: str,
        *,
        event: job_pb2.ProgressEvent | None = None,
        **updates: Any,
    ) -> JobRecord:
        body = None if event is None else event_to_json(event)
        return await self._thread.batched(
            functools.partial(
                self._apply_with_event, job_id, to_state, reason, utcnow(), updates, event, body
            ),
            lambda _: self._load(job_id),
        )

    def _apply_with_event(
        self,
        job_id: str,
        to_state: JobState,
        reason: str,
        now: datetime,
        updates: dict[str, Any],
        event: job_pb2.ProgressEvent | None,
        body: str | None,
    ) -> None:
        self._apply(job_id, to_state, reason, now, updates)
        if event is not None and body is not None:
            self._insert_event(body, event.job_id, event.seq)

    def _apply(
        self, job_id: str, to_state: JobState, reason: str, now: datetime, updates: dict[str, Any]
    ) -> None:
        """Check and apply one transition inside the caller's transaction."""
        row = self._db.execute(
            "SELECT state, attempt FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        plan = rules.plan_transition(
            JobState(row["state"]), row["attempt"], to_state, reason, updates
        )
        self._update_row(job_id, plan.updates, now)
        if plan.history is not None:
            self._db.execute(
                rows.insert_history_sql(CODEC),
                rows.history_values(job_id, plan.history, now, CODEC),
            )

    def _update_row(self, job_id: str, updates: dict[str, Any], now: datetime) -> None:
        rules.check_field_updates(updates)
        cursor = self._db.execute(*rows.update_job_statement(job_id, updates, now, CODEC))
        if cursor.rowcount == 0:
            raise NotFound(f"job {job_id} not found")

    async def assign_jobs(self, assignments: Sequence[Assignment]) -> list[JobRecord]:
        if not assignments:
            return []
        batch = list(assignments)
        return await self._thread.batched(
            functools.partial(self._assign, batch, utcnow()), self._assigned_records
        )

    def _assign(self, batch: list[Assignment], now: datetime) -> list[sqlite3.Row]:
        """Move the batch's QUEUED jobs to ASSIGNED; returns the rows moved."""
        moved: list[sqlite3.Row] = []
        history = []
        for item in batch:
            updates = rules.assignment_updates(item.agent, item.attempt)
            sql, params = rows.update_job_statement(
                item.job_id, {**updates, "state": JobState.ASSIGNED.value}, now, CODEC
            )
            # Only a job still QUEUED moves: a cancelled one is left alone.
            found = self._db.execute(f"{sql} AND state = ? RETURNING *", (*params, "QUEUED"))
            row = found.fetchone()
            if row is None:
                continue
            moved.append(row)
            entry = rules.HistoryEntry(
                JobState.QUEUED, JobState.ASSIGNED, item.reason, item.attempt
            )
            history.append(rows.history_values(item.job_id, entry, now, CODEC))
        self._db.executemany(rows.insert_history_sql(CODEC), history)
        return moved

    def _assigned_records(self, moved: list[sqlite3.Row]) -> list[JobRecord]:
        """The records of committed assignments, every history read in one query."""
        if not moved:
            return []
        ids = [r["job_id"] for r in moved]
        history: dict[str, list[Any]] = {job_id: [] for job_id in ids}
        for h in self._db.execute(
            f"SELECT * FROM job_transitions WHERE job_id IN ({_marks(ids)}) ORDER BY id", ids
        ):
            history[h["job_id"]].append(rows.transition_record(h, CODEC))
        return [rows.job_record(r, history[r["job_id"]], CODEC) for r in moved]

    async def update_job(
        self, job_id: str, *, event: job_pb2.ProgressEvent | None = None, **updates: Any
    ) -> JobRecord:
        body = None if event is None else event_to_json(event)
        return await self._thread.batched(
            functools.partial(self._update_with_event, job_id, updates, utcnow(), event, body),
            lambda _: self._load(job_id),
        )

    def _update_with_event(
        self,
        job_id: str,
        updates: dict[str, Any],
        now: datetime,
        event: job_pb2.ProgressEvent | None,
        body: str | None,
    ) -> None:
        self._update_row(job_id, updates, now)
        if event is not None and body is not None:
            self._insert_event(body, event.job_id, event.seq)

    async def running_jobs_by_agent(self) -> dict[str, list[str]]:
        return await self._thread.run(self._running_jobs_by_agent)

    def _running_jobs_by_agent(self) -> dict[str, list[str]]:
        states = [s.value for s in ACTIVE_STATES]
        found = self._db.execute(
            "SELECT assigned_agent, job_id FROM jobs WHERE assigned_agent IS NOT NULL "
            f"AND state IN ({_marks(states)}) ORDER BY submitted_at, job_id",
            states,
        )
        return rows.jobs_by_agent(found)

    # One agent's jobs and the per-agent counts are answered by SQLite: a wave's 1,000
    # active jobs were turned into Python rows for each of 100 agents' heartbeats, and for
    # every scheduling pass.
    async def running_jobs_of(self, agent: str) -> list[str]:
        return await self._thread.run(self._running_jobs_of, agent)

    def _running_jobs_of(self, agent: str) -> list[str]:
        states = [s.value for s in ACTIVE_STATES]
        found = self._db.execute(
            f"SELECT job_id FROM jobs WHERE assigned_agent = ? AND state IN ({_marks(states)}) "
            "ORDER BY submitted_at, job_id",
            (agent, *states),
        )
        return [row["job_id"] for row in found]

    async def count_running_jobs(self) -> dict[str, int]:
        return await self._thread.run(self._count_running_jobs)

    def _count_running_jobs(self) -> dict[str, int]:
        states = [s.value for s in ACTIVE_STATES]
        found = self._db.execute(
            "SELECT assigned_agent, COUNT(*) AS n FROM jobs WHERE assigned_agent IS NOT NULL "
            f"AND state IN ({_marks(states)}) GROUP BY assigned_agent",
            states,
        )
        return {row["assigned_agent"]: row["n"] for row in found}

    async def count_jobs_by_state(self) -> dict[JobState, int]:
        return await self._thread.run(self._count_jobs_by_state)

    def _count_jobs_by_state(self) -> dict[JobState, int]:
        return rows.counts_by_state(
            self._db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        )

    # --- events -------------------------------------------------------------------------

    async def append_event(self, event: job_pb2.ProgressEvent) -> bool:
        return await self._thread.batched(
            functools.partial(self._insert_event, event_to_json(event), event.job_id, event.seq),
            bool,
        )

    def _insert_event(self, body: str, job_id: str, seq: int) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO job_events (job_id, seq, event) VALUES (?, ?, ?)",
            (job_id, seq, body),
        )
        return cursor.rowcount == 1

    async def list_events(
        self, job_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[job_pb2.ProgressEvent]:
        bodies = await self._thread.run(self._list_events, job_id, after_seq, limit)
        return [event_from_json(body) for body in bodies]

    def _list_events(self, job_id: str, after_seq: int, limit: int | None) -> list[str]:
        found = self._db.execute(
            "SELECT event FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after_seq, -1 if limit is None else limit),
        )
        return [row["event"] for row in found]

    async def events_with_state(
        self, job_id: str, after_seq: int, limit: int | None = None
    ) -> tuple[JobState, list[job_pb2.ProgressEvent]]:
        state, bodies = await self._thread.run(self._events_with_state, job_id, after_seq, limit)
        return state, [event_from_json(body) for body in bodies]

    def _events_with_state(
        self, job_id: str, after_seq: int, limit: int | None
    ) -> tuple[JobState, list[str]]:
        # One thread owns the connection and makes every write: nothing commits between the
        # two reads.
        row = self._db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return JobState(row["state"]), self._list_events(job_id, after_seq, limit)

    # --- agents -------------------------------------------------------------------------

    async def upsert_agent(self, agent: AgentRecord) -> AgentRecord:
        return await self._thread.run(self._upsert_agent, agent)

    def _upsert_agent(self, agent: AgentRecord) -> AgentRecord:
        with self._thread.write() as conn:
            conn.execute(rows.upsert_agent_sql(CODEC), rows.agent_values(agent, CODEC))
        return self._load_agent(agent.name)

    async def get_agent(self, name: str) -> AgentRecord:
        return await self._thread.run(self._load_agent, name)

    def _load_agent(self, name: str) -> AgentRecord:
        row = self._db.execute("SELECT * FROM agents WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"agent {name} not found")
        return rows.agent_record(row, CODEC)

    async def list_agents(self) -> list[AgentRecord]:
        return await self._thread.run(self._list_agents)

    def _list_agents(self) -> list[AgentRecord]:
        found = self._db.execute("SELECT * FROM agents ORDER BY name")
        return [rows.agent_record(r, CODEC) for r in found]

    async def record_heartbeat(
        self, name: str, now: datetime, capabilities: agent_pb2.Capabilities | None
    ) -> bool:
        body = rows.capabilities_json(capabilities)
        # In the group commit: a fleet's heartbeats share the transactions (and fsyncs) of
        # the writes around them instead of each taking one of its own.
        return await self._thread.batched(
            functools.partial(self._record_heartbeat, name, CODEC.encode_time(now), body),
            lambda updated: updated == 1,
        )

    def _record_heartbeat(self, name: str, now: str, capabilities: str | None) -> int:
        cursor = self._db.execute(
            "UPDATE agents SET last_heartbeat = ?, "
            "capabilities = COALESCE(?, capabilities) WHERE name = ?",
            (now, capabilities, name),
        )
        return cursor.rowcount

    async def set_agent_flags(
        self,
        name: str,
        *,
        cordoned: bool | None = None,
        draining: bool | None = None,
        drain_deadline: datetime | None = None,
    ) -> AgentRecord:
        values = rows.agent_flag_values(name, cordoned, draining, drain_deadline, CODEC)
        return await self._thread.run(self._set_agent_flags, name, values)

    def _set_agent_flags(self, name: str, values: Sequence[Any]) -> AgentRecord:
        with self._thread.write() as conn:
            cursor = conn.execute(rows.set_agent_flags_sql(CODEC), values)
        if cursor.rowcount == 0:
            raise NotFound(f"agent {name} not found")
        return self._load_agent(name)

    # --- progress in batches ------------------------------------------------------------

    async def record_events(
        self, job_id: str, events: Sequence[job_pb2.ProgressEvent], **updates: Any
    ) -> JobRecord:
        bodies = event_rows(job_id, events, updates)
        return await self._thread.batched(
            functools.partial(self._insert_events, job_id, bodies, updates, utcnow()),
            lambda _: self._load(job_id),
        )

    async def record_progress(self, writes: Sequence[ProgressWrite]) -> dict[str, JobStatus]:
        if not writes:
            return {}
        batch = list(writes)
        bodies = progress_rows(batch)
        return await self._thread.batched(
            functools.partial(self._insert_progress, batch, bodies, utcnow()), lambda found: found
        )

    def _insert_progress(
        self, writes: list[ProgressWrite], bodies: list[tuple[str, int, str]], now: datetime
    ) -> dict[str, JobStatus]:
        # The statuses first (in the write's transaction, so a cancel flag is the committed
        # one): a job the store does not have is left out of the UPDATE and the INSERT.
        ids = [write.job_id for write in writes]
        found: dict[str, JobStatus] = {}
        for start in range(0, len(ids), _IN_LIST_CHUNK):
            chunk = ids[start : start + _IN_LIST_CHUNK]
            marks = CODEC.marks(len(chunk))
            for row in self._db.execute(
                f"SELECT {rows.JOB_STATUS_COLUMNS} FROM jobs WHERE job_id IN ({marks})", chunk
            ):
                found[row["job_id"]] = rows.job_status(row, CODEC)
        found, written = rows.progress_outcome(writes, found, now)
        self._db.executemany(
            rows.progress_update_statement(CODEC),
            [rows.progress_update_params(w, now, CODEC) for w in writes if w.job_id in written],
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO job_events (job_id, seq, event) VALUES (?, ?, ?)",
            [body for body in bodies if body[0] in written],
        )
        return found

    def _insert_events(
        self,
        job_id: str,
        bodies: list[tuple[str, int, str]],
        updates: dict[str, Any],
        now: datetime,
    ) -> None:
        # The row first: an unknown job is NotFound before any event is inserted.
        self._update_row(job_id, updates, now)
        self._db.executemany(
            "INSERT OR IGNORE INTO job_events (job_id, seq, event) VALUES (?, ?, ?)", bodies
        )
