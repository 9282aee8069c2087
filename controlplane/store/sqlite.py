"""The SQLite job store: one file, WAL, synchronous=FULL, one dedicated thread.

Every call runs on a single-thread executor that owns the connection, so the event loop
never waits on disk and writes never race each other. Each write is one committed
transaction before the awaiting coroutine resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import json_format

from controlplane.capabilities import needs_kind
from controlplane.models import AgentRecord, JobRecord, QueuedJob, QueueKind, Transition
from controlplane.store.base import (
    ACTIVE_STATES,
    UPDATABLE_FIELDS,
    JobPage,
    JobStore,
    event_rows,
)
from controlplane.store.sqlite_schema import migrate
from protocol.conversion import event_from_json, event_to_json, utcnow
from protocol.errors import AlreadyExists, NotFound
from protocol.gen.h2k.v1 import agent_pb2, job_pb2
from protocol.spec import JobSpec
from protocol.states import JobState, check_transition

log = logging.getLogger(__name__)

T = TypeVar("T")


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="microseconds")


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


# A write waiting for the next group commit: the work (inside the transaction), what turns
# its result into the caller's answer (after the commit), and the caller's future.
_PendingWrite = tuple[Callable[[], Any], Callable[[Any], Any], "asyncio.Future[Any]"]


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    """Hand a batched call's outcome to its caller (unless the caller gave up)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


@functools.lru_cache(maxsize=1024)
def _parse_spec(body: str) -> JobSpec:
    """A stored spec, parsed once while it is in use (specs are frozen, so sharing is safe)."""
    return JobSpec.model_validate_json(body)


@functools.lru_cache(maxsize=1024)
def _capabilities_wire(body: str) -> bytes:
    """Stored capabilities (JSON) in wire form: parsed once per distinct body."""
    return json_format.Parse(body, agent_pb2.Capabilities()).SerializeToString()


def _capabilities(body: str) -> agent_pb2.Capabilities:
    """A fresh message each time (callers may keep or change it); the JSON is parsed once."""
    return agent_pb2.Capabilities.FromString(_capabilities_wire(body))


def _column_value(name: str, value: Any) -> Any:
    """A record field as the column stores it."""
    if name == "result":
        return None if value is None else json.dumps(value, sort_keys=True)
    if isinstance(value, datetime):
        return _ts(value)
    if isinstance(value, bool):
        return int(value)
    return value


class SqliteStore(JobStore):
    """A :class:`JobStore` in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="h2k-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._writes: deque[_PendingWrite] = deque()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the store is not open")
        return self._conn

    async def _batched(self, work: Callable[[], Any], after: Callable[[Any], T]) -> T:
        """Run ``work`` in a write transaction shared with the writes waiting meanwhile.

        Group commit: writes that arrive while the store thread is busy share one
        transaction and one fsync. Each runs in its own savepoint (a failing write leaves the
        others alone) and each caller resumes only after the commit; ``after`` turns the
        work's result into the caller's answer once it is committed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._writes.append((work, after, future))
        await self._run(self._write_pending, loop)
        return await future

    def _write_pending(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit every waiting write in one transaction (a no-op when none waits)."""
        batch = []
        while self._writes:
            batch.append(self._writes.popleft())
        if not batch:
            return
        outcomes: list[Any] = []
        try:
            with self._write() as conn:
                for work, _after, _future in batch:
                    conn.execute("SAVEPOINT write")
                    try:
                        outcomes.append(work())
                    except Exception as exc:
                        conn.execute("ROLLBACK TO write")
                        outcomes.append(exc)
                    conn.execute("RELEASE write")
        except Exception as exc:
            outcomes = [exc] * len(batch)
        for (_work, after, future), outcome in zip(batch, outcomes, strict=True):
            answer = outcome
            if not isinstance(outcome, Exception):
                try:
                    answer = after(outcome)
                except Exception as exc:
                    answer = exc
            loop.call_soon_threadsafe(_settle, future, answer)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE so readers never see half of it."""
        conn = self._db
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk (WAL fsynced) before SubmitJob answers.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")
        migrate(conn)
        self._conn = conn
        self._fill_in_kinds()
        log.info("store opened path=%s", self.path)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            # Every commit is already durable (WAL, synchronous=FULL); folding the WAL into
            # the database file leaves a tidy single file behind.
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    # --- jobs ---------------------------------------------------------------------------

    async def create_job(
        self, spec: JobSpec, now: datetime, trace_context: str = ""
    ) -> tuple[JobRecord, bool]:
        return await self._batched(
            functools.partial(self._insert_job, spec, now, trace_context),
            functools.partial(self._created, spec),
        )

    def _insert_job(self, spec: JobSpec, now: datetime, trace_context: str) -> str | None:
        """Insert a new job (QUEUED) unless its id exists; returns the existing fingerprint."""
        row = self._db.execute(
            "SELECT fingerprint FROM jobs WHERE job_id = ?", (spec.job_id,)
        ).fetchone()
        if row is not None:
            return str(row["fingerprint"])
        # Created, validated (on receipt) and queued in the same breath: the row goes in
        # QUEUED with the two transitions that led there.
        check_transition(JobState.CREATED, JobState.VALIDATED)
        check_transition(JobState.VALIDATED, JobState.QUEUED)
        self._db.execute(
            "INSERT INTO jobs (job_id, spec, fingerprint, state, priority, "
            "submitted_at, updated_at, trace_context, needs_kind) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                spec.job_id,
                spec.model_dump_json(),
                spec.fingerprint(),
                JobState.QUEUED.value,
                spec.execution_policy.priority,
                _ts(now),
                _ts(now),
                trace_context,
                needs_kind(spec),
            ),
        )
        submitted = f"spec valid; submitted by {spec.audit.requested_by}"
        self._add_history(spec.job_id, JobState.CREATED, JobState.VALIDATED, now, submitted, 0)
        self._add_history(
            spec.job_id, JobState.VALIDATED, JobState.QUEUED, now, "waiting for an agent", 0
        )
        return None

    async def create_jobs(
        self, specs: Sequence[JobSpec], now: datetime, trace_context: str = ""
    ) -> list[tuple[JobRecord, bool]]:
        batch = list(specs)
        return await self._batched(
            functools.partial(self._insert_jobs, batch, now, trace_context),
            lambda existing: [self._created(s, e) for s, e in zip(batch, existing, strict=True)],
        )

    def _insert_jobs(
        self, specs: list[JobSpec], now: datetime, trace_context: str
    ) -> list[str | None]:
        """Insert every new job; a conflict raises, and the caller's savepoint undoes all."""
        existing = []
        for index, spec in enumerate(specs):
            fingerprint = self._insert_job(spec, now, trace_context)
            if fingerprint is not None and fingerprint != spec.fingerprint():
                raise AlreadyExists(
                    f"specs[{index}].job_id: job {spec.job_id} already exists with a different spec"
                )
            existing.append(fingerprint)
        return existing

    def _created(self, spec: JobSpec, existing: str | None) -> tuple[JobRecord, bool]:
        """The answer of a committed submit; ``existing`` is the fingerprint already stored."""
        if existing is not None and existing != spec.fingerprint():
            raise AlreadyExists(f"job_id: job {spec.job_id} already exists with a different spec")
        # A new job's spec is the one just stored: no need to parse it back.
        return self._load(spec.job_id, spec if existing is None else None), existing is None

    async def get_job(self, job_id: str) -> JobRecord:
        return await self._run(self._load, job_id)

    def _load(self, job_id: str, spec: JobSpec | None = None) -> JobRecord:
        row = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return self._record(row, spec)

    def _record(self, row: sqlite3.Row, spec: JobSpec | None = None) -> JobRecord:
        history = [
            Transition(
                from_state=JobState(h["from_state"]),
                to_state=JobState(h["to_state"]),
                time=datetime.fromisoformat(h["time"]),
                reason=h["reason"],
                attempt=h["attempt"],
            )
            for h in self._db.execute(
                "SELECT * FROM job_transitions WHERE job_id = ? ORDER BY id", (row["job_id"],)
            )
        ]
        return JobRecord(
            job_id=row["job_id"],
            spec=spec or _parse_spec(row["spec"]),
            fingerprint=row["fingerprint"],
            state=JobState(row["state"]),
            submitted_at=datetime.fromisoformat(row["submitted_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
            attempt=row["attempt"],
            assigned_agent=row["assigned_agent"],
            queue_reason=row["queue_reason"],
            result=None if row["result"] is None else json.loads(row["result"]),
            error=row["error"],
            started_at=_dt(row["started_at"]),
            finished_at=_dt(row["finished_at"]),
            last_seq=row["last_seq"],
            phase=row["phase"],
            progress_percent=row["progress_percent"],
            cancel_requested=bool(row["cancel_requested"]),
            history=history,
            trace_context=row["trace_context"],
        )

    async def list_jobs(
        self,
        states: Collection[JobState] | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> JobPage:
        return await self._run(self._list_jobs, tuple(states or ()), limit, offset)

    def _list_jobs(self, states: tuple[JobState, ...], limit: int | None, offset: int) -> JobPage:
        sql = "SELECT * FROM jobs"
        params: list[Any] = []
        if states:
            sql += f" WHERE state IN ({', '.join('?' * len(states))})"
            params.extend(s.value for s in states)
        # One row more than asked tells whether another page exists.
        sql += " ORDER BY submitted_at, job_id LIMIT ? OFFSET ?"
        params.extend([-1 if limit is None else limit + 1, offset])
        rows = self._db.execute(sql, params).fetchall()
        more = limit is not None and len(rows) > limit
        jobs = [self._record(r) for r in rows[:limit]]
        return JobPage(jobs=jobs, next_offset=offset + len(jobs) if more else None)

    # --- the queue, as the scheduler reads it ---------------------------------------------

    def _fill_in_kinds(self) -> None:
        """Give unfinished jobs stored before schema version 3 their kind."""
        live = [s.value for s in JobState if not s.is_terminal]
        marks = ", ".join("?" * len(live))
        rows = self._db.execute(
            f"SELECT job_id, spec FROM jobs WHERE state IN ({marks}) AND needs_kind = ''", live
        ).fetchall()
        if not rows:
            return
        with self._write() as conn:
            conn.executemany(
                "UPDATE jobs SET needs_kind = ? WHERE job_id = ?",
                [(needs_kind(JobSpec.model_validate_json(r["spec"])), r["job_id"]) for r in rows],
            )
        log.info("job kinds filled in jobs=%d", len(rows))

    async def queue_summary(self) -> list[QueueKind]:
        return await self._run(self._queue_summary)

    def _queue_summary(self) -> list[QueueKind]:
        rows = self._db.execute(
            "SELECT needs_kind, COUNT(*) AS n, MIN(submitted_at) AS oldest "
            "FROM jobs INDEXED BY jobs_by_kind WHERE state = ? GROUP BY needs_kind",
            (JobState.QUEUED.value,),
        ).fetchall()
        return [
            QueueKind(r["needs_kind"], r["n"], datetime.fromisoformat(r["oldest"])) for r in rows
        ]

    async def list_queued(
        self, kinds: Collection[str], limit: int, exclude: Collection[str] = ()
    ) -> list[QueuedJob]:
        return await self._run(self._list_queued, tuple(kinds), limit, tuple(exclude))

    def _list_queued(
        self, kinds: tuple[str, ...], limit: int, exclude: tuple[str, ...]
    ) -> list[QueuedJob]:
        if not kinds or limit <= 0:
            return []
        sql = (
            "SELECT job_id, priority, submitted_at, attempt, needs_kind FROM jobs "
            "INDEXED BY jobs_queue WHERE state = ? "
            f"AND needs_kind IN ({', '.join('?' * len(kinds))}) "
        )
        params: list[Any] = [JobState.QUEUED.value, *kinds]
        if exclude:
            sql += f"AND job_id NOT IN ({', '.join('?' * len(exclude))}) "
            params.extend(exclude)
        sql += "ORDER BY priority, submitted_at, job_id LIMIT ?"
        params.append(limit)
        return [
            QueuedJob(
                job_id=r["job_id"],
                priority=r["priority"],
                submitted_at=datetime.fromisoformat(r["submitted_at"]),
                attempt=r["attempt"],
                kind=r["needs_kind"],
            )
            for r in self._db.execute(sql, params)
        ]

    async def set_queue_reasons(
        self, reasons: Mapping[str, str], keep: Collection[str] = ()
    ) -> int:
        return await self._batched(
            functools.partial(self._set_queue_reasons, dict(reasons), tuple(keep)), lambda n: n
        )

    def _set_queue_reasons(self, reasons: dict[str, str], keep: tuple[str, ...]) -> int:
        changed = 0
        spare = f" AND job_id NOT IN ({', '.join('?' * len(keep))})" if keep else ""
        now = _ts(utcnow())
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
        self, job_id: str, to_state: JobState, reason: str, **updates: Any
    ) -> JobRecord:
        return await self._batched(
            functools.partial(self._apply, job_id, to_state, reason, utcnow(), updates),
            lambda _: self._load(job_id),
        )

    def _apply(
        self, job_id: str, to_state: JobState, reason: str, now: datetime, updates: dict[str, Any]
    ) -> None:
        """Check and apply one transition inside the caller's transaction."""
        row = self._db.execute(
            "SELECT state, attempt FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        from_state = JobState(row["state"])
        check_transition(from_state, to_state)
        self._update_row(job_id, {**updates, "state": to_state.value}, now)
        if not (from_state is JobState.PROGRESSING and to_state is JobState.PROGRESSING):
            attempt = updates.get("attempt", row["attempt"])
            self._add_history(job_id, from_state, to_state, now, reason, attempt)

    def _update_row(self, job_id: str, updates: dict[str, Any], now: datetime) -> None:
        unknown = set(updates) - UPDATABLE_FIELDS - {"state"}
        if unknown:
            raise ValueError(f"cannot update job fields {sorted(unknown)}")
        columns = {name: _column_value(name, value) for name, value in updates.items()}
        columns["updated_at"] = _ts(now)
        assignments = ", ".join(f"{name} = ?" for name in columns)
        cursor = self._db.execute(
            f"UPDATE jobs SET {assignments} WHERE job_id = ?", [*columns.values(), job_id]
        )
        if cursor.rowcount == 0:
            raise NotFound(f"job {job_id} not found")

    def _add_history(
        self,
        job_id: str,
        from_state: JobState,
        to_state: JobState,
        now: datetime,
        reason: str,
        attempt: int,
    ) -> None:
        self._db.execute(
            "INSERT INTO job_transitions (job_id, from_state, to_state, time, reason, attempt) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                job_id,
                from_state.value,
                to_state.value,
                _ts(now),
                reason,
                attempt,
            ),
        )

    async def update_job(self, job_id: str, **updates: Any) -> JobRecord:
        return await self._batched(
            functools.partial(self._update_row, job_id, updates, utcnow()),
            lambda _: self._load(job_id),
        )

    async def running_jobs_by_agent(self) -> dict[str, list[str]]:
        return await self._run(self._running_jobs_by_agent)

    def _running_jobs_by_agent(self) -> dict[str, list[str]]:
        states = [s.value for s in ACTIVE_STATES]
        rows = self._db.execute(
            "SELECT assigned_agent, job_id FROM jobs WHERE assigned_agent IS NOT NULL "
            f"AND state IN ({', '.join('?' * len(states))}) ORDER BY submitted_at, job_id",
            states,
        )
        running: dict[str, list[str]] = {}
        for row in rows:
            running.setdefault(row["assigned_agent"], []).append(row["job_id"])
        return running

    async def count_jobs_by_state(self) -> dict[JobState, int]:
        return await self._run(self._count_jobs_by_state)

    def _count_jobs_by_state(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for row in self._db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            counts[JobState(row["state"])] = row["n"]
        return counts

    # --- events -------------------------------------------------------------------------

    async def append_event(self, event: job_pb2.ProgressEvent) -> bool:
        return await self._batched(
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
        rows = await self._run(self._list_events, job_id, after_seq, limit)
        return [event_from_json(body) for body in rows]

    def _list_events(self, job_id: str, after_seq: int, limit: int | None) -> list[str]:
        rows = self._db.execute(
            "SELECT event FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after_seq, -1 if limit is None else limit),
        )
        return [row["event"] for row in rows]

    # --- agents -------------------------------------------------------------------------

    async def upsert_agent(self, agent: AgentRecord) -> AgentRecord:
        return await self._run(self._upsert_agent, agent)

    def _upsert_agent(self, agent: AgentRecord) -> AgentRecord:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO agents (name, address, capabilities, max_concurrent_jobs, "
                "registered_at, last_heartbeat, version) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET address = excluded.address, "
                "capabilities = excluded.capabilities, "
                "max_concurrent_jobs = excluded.max_concurrent_jobs, "
                "registered_at = excluded.registered_at, "
                "last_heartbeat = excluded.last_heartbeat, version = excluded.version",
                (
                    agent.name,
                    agent.address,
                    json_format.MessageToJson(agent.capabilities, indent=None),
                    agent.max_concurrent_jobs,
                    _ts(agent.registered_at),
                    _ts(agent.last_heartbeat),
                    agent.version,
                ),
            )
        return self._load_agent(agent.name)

    async def get_agent(self, name: str) -> AgentRecord:
        return await self._run(self._load_agent, name)

    def _load_agent(self, name: str) -> AgentRecord:
        row = self._db.execute("SELECT * FROM agents WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"agent {name} not found")
        return self._agent(row)

    @staticmethod
    def _agent(row: sqlite3.Row) -> AgentRecord:
        return AgentRecord(
            name=row["name"],
            address=row["address"],
            capabilities=_capabilities(row["capabilities"]),
            max_concurrent_jobs=row["max_concurrent_jobs"],
            registered_at=datetime.fromisoformat(row["registered_at"]),
            last_heartbeat=datetime.fromisoformat(row["last_heartbeat"]),
            version=row["version"],
            cordoned=bool(row["cordoned"]),
            draining=bool(row["draining"]),
            drain_deadline=_dt(row["drain_deadline"]),
        )

    async def list_agents(self) -> list[AgentRecord]:
        return await self._run(self._list_agents)

    def _list_agents(self) -> list[AgentRecord]:
        return [self._agent(r) for r in self._db.execute("SELECT * FROM agents ORDER BY name")]

    async def record_heartbeat(
        self, name: str, now: datetime, capabilities: agent_pb2.Capabilities | None
    ) -> bool:
        body = (
            None if capabilities is None else json_format.MessageToJson(capabilities, indent=None)
        )
        return await self._run(self._record_heartbeat, name, _ts(now), body)

    def _record_heartbeat(self, name: str, now: str, capabilities: str | None) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE agents SET last_heartbeat = ?, "
                "capabilities = COALESCE(?, capabilities) WHERE name = ?",
                (now, capabilities, name),
            )
        return cursor.rowcount == 1

    async def set_agent_flags(
        self,
        name: str,
        *,
        cordoned: bool | None = None,
        draining: bool | None = None,
        drain_deadline: datetime | None = None,
    ) -> AgentRecord:
        return await self._run(self._set_agent_flags, name, cordoned, draining, drain_deadline)

    def _set_agent_flags(
        self,
        name: str,
        cordoned: bool | None,
        draining: bool | None,
        drain_deadline: datetime | None,
    ) -> AgentRecord:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE agents SET cordoned = COALESCE(?, cordoned), "
                "draining = COALESCE(?, draining), "
                "drain_deadline = COALESCE(?, drain_deadline) WHERE name = ?",
                (
                    None if cordoned is None else int(cordoned),
                    None if draining is None else int(draining),
                    _ts(drain_deadline),
                    name,
                ),
            )
        if cursor.rowcount == 0:
            raise NotFound(f"agent {name} not found")
        return self._load_agent(name)

    # --- progress in batches ------------------------------------------------------------

    async def record_events(
        self, job_id: str, events: Sequence[job_pb2.ProgressEvent], **updates: Any
    ) -> JobRecord:
        rows = event_rows(job_id, events, updates)
        return await self._batched(
            functools.partial(self._insert_events, job_id, rows, updates, utcnow()),
            lambda _: self._load(job_id),
        )

    def _insert_events(
        self, job_id: str, rows: list[tuple[str, int, str]], updates: dict[str, Any], now: datetime
    ) -> None:
        # The row first: an unknown job is NotFound before any event is inserted.
        self._update_row(job_id, updates, now)
        self._db.executemany(
            "INSERT OR IGNORE INTO job_events (job_id, seq, event) VALUES (?, ?, ?)", rows
        )
