"""The PostgreSQL job store, shared by several control-plane replicas.

psycopg 3 with an async connection pool (:mod:`~controlplane.store.postgres_pool`); every
write is one committed transaction before the awaiting coroutine resumes. What is written is
decided in :mod:`~controlplane.store.rules` and :mod:`~controlplane.store.rows`, as for
SQLite. What makes several replicas safe:

* a transition locks the job's row (``SELECT ... FOR UPDATE``) before it checks the state
  table, so of two replicas moving the same job QUEUED -> ASSIGNED one wins and the other
  gets :class:`IllegalTransition` (it then leaves the job alone);
* leases (job streams, the scheduler role) are compare-and-set rows judged by the
  database's clock, never a replica's (:mod:`~controlplane.store.postgres_leases`);
* every event stored and every transition sends ``NOTIFY`` (delivered on commit) so that
  watchers connected to other replicas hear of it (see :mod:`controlplane.store.pg_listen`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from controlplane.models import AgentRecord, JobRecord, QueuedJob, QueueKind, Transition
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
from controlplane.store.pg_listen import CHANNEL, ChangeFeed
from controlplane.store.postgres_leases import DISPATCH_CHANNEL, Leases
from controlplane.store.postgres_migrations import PostgresMigrations
from controlplane.store.postgres_pool import Conn, Connections, Row, reachable, redacted
from controlplane.store.postgres_schema import migrate
from protocol.conversion import event_from_json, event_to_json, utcnow
from protocol.errors import NotFound
from protocol.gen.h2k.v1 import agent_pb2, job_pb2
from protocol.spec import JobSpec
from protocol.states import JobState

log = logging.getLogger(__name__)

_ACTIVE = [s.value for s in ACTIVE_STATES]
# psycopg takes and gives datetimes and booleans as they are.
CODEC = rows.Codec()


class PostgresStore(PostgresMigrations, JobStore):
    """A :class:`JobStore` in a PostgreSQL database, safe for several replicas."""

    replicated = True

    def __init__(self, url: str, max_connections: int = 10) -> None:
        self.url = url
        # Tells this replica's notifications apart from the others'.
        self.instance_id = uuid.uuid4().hex[:12]
        self._db = Connections(url, max_connections)
        self._leases = Leases(self._db, self.instance_id)
        self._feed: ChangeFeed | None = None
        self._dispatch_feed: ChangeFeed | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        # The first connection is made here so a wrong URL fails the start, not a later RPC.
        async with reachable():
            async with await psycopg.AsyncConnection.connect(self.url, connect_timeout=10) as conn:
                await migrate(conn)
            await self._db.open()
            await self._fill_in_kinds()
        log.info("store opened url=%s", redacted(self.url))

    async def close(self) -> None:
        for feed in (self._feed, self._dispatch_feed):
            if feed is not None:
                await feed.stop()
        self._feed = self._dispatch_feed = None
        await self._db.close()

    def start_change_feed(
        self, on_change: Callable[[str | None], None], on_live: Callable[[bool], None]
    ) -> None:
        self._feed = ChangeFeed(self.url, self.instance_id, on_change, on_live)
        self._feed.start()

    async def _notify(self, conn: Conn, job_id: str) -> None:
        """Tell the other replicas that ``job_id`` changed (sent when the transaction commits)."""
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{self.instance_id}:{job_id}"))

    # --- jobs ---------------------------------------------------------------------------

    async def create_job(
        self, spec: JobSpec, now: datetime, trace_context: str = ""
    ) -> tuple[JobRecord, bool]:
        job = rows.new_job(spec, now, trace_context, CODEC)
        async with self._db.transaction() as conn:
            return await self._insert_job(conn, job, "job_id")

    async def create_jobs(
        self, specs: Sequence[JobSpec], now: datetime, trace_context: str = ""
    ) -> list[tuple[JobRecord, bool]]:
        jobs = [rows.new_job(spec, now, trace_context, CODEC) for spec in specs]
        # One transaction: a conflict raises out of it and nothing is stored.
        async with self._db.transaction() as conn:
            return [
                await self._insert_job(conn, job, f"specs[{i}].job_id")
                for i, job in enumerate(jobs)
            ]

    async def _insert_job(self, conn: Conn, job: rows.NewJob, field: str) -> tuple[JobRecord, bool]:
        """Insert a new job, queued, with its history; ``field`` names the spec's job_id in
        a conflict. A new job's answer is what was inserted (no read back)."""
        cursor = await conn.execute(rows.insert_job_sql(CODEC).encode(), job.values)
        if await cursor.fetchone() is not None:
            async with conn.cursor() as history:
                await history.executemany(rows.insert_history_sql(CODEC).encode(), job.history)
            return job.record, True
        job_id = job.record.job_id
        cursor = await conn.execute("SELECT fingerprint FROM jobs WHERE job_id = %s", (job_id,))
        row = await cursor.fetchone()
        rules.check_resubmission(
            field, job.record.spec, None if row is None else row["fingerprint"]
        )
        return await self._load(conn, job_id), False

    async def get_job(self, job_id: str) -> JobRecord:
        async with self._db.connection() as conn:
            return await self._load(conn, job_id)

    async def _load(self, conn: Conn, job_id: str) -> JobRecord:
        cursor = await conn.execute("SELECT * FROM jobs WHERE job_id = %s", (job_id,))
        row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return (await self._records(conn, [row]))[0]

    async def _records(self, conn: Conn, found: list[Row]) -> list[JobRecord]:
        """Records of job rows, with every history read in one query."""
        history: dict[str, list[Transition]] = {r["job_id"]: [] for r in found}
        if found:
            cursor = await conn.execute(
                "SELECT * FROM job_transitions WHERE job_id = ANY(%s) ORDER BY id",
                (list(history),),
            )
            for h in await cursor.fetchall():
                history[h["job_id"]].append(rows.transition_record(h, CODEC))
        return [rows.job_record(row, history[row["job_id"]], CODEC) for row in found]

    async def list_jobs(
        self,
        states: Collection[JobState] | None = None,
        limit: int | None = 100,
        offset: int = 0,
        with_history: bool = True,
    ) -> JobPage:
        sql = "SELECT * FROM jobs"
        params: list[Any] = []
        if states:
            sql += " WHERE state = ANY(%s)"
            params.append([s.value for s in states])
        sql += " ORDER BY submitted_at, job_id LIMIT %s OFFSET %s"
        params.extend([None if limit is None else limit + 1, offset])
        async with self._db.connection() as conn:
            cursor = await conn.execute(sql.encode(), params)
            found = await cursor.fetchall()
            more = limit is not None and len(found) > limit
            if with_history:
                jobs = await self._records(conn, found[:limit])
            else:
                jobs = [rows.job_record(r, [], CODEC) for r in found[:limit]]
        return JobPage(jobs=jobs, next_offset=offset + len(jobs) if more else None)

    # --- the queue, as the scheduler reads it ---------------------------------------------

    async def _fill_in_kinds(self) -> None:
        """Give unfinished jobs stored before schema version 3 their kind."""
        live = [s.value for s in rules.LIVE_STATES]
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "SELECT job_id, spec FROM jobs WHERE state = ANY(%s) AND needs_kind = '' "
                "FOR UPDATE",
                (live,),
            )
            kinds = rows.missing_kinds(await cursor.fetchall())
            for kind, job_id in kinds:
                await conn.execute(
                    "UPDATE jobs SET needs_kind = %s WHERE job_id = %s", (kind, job_id)
                )
        if kinds:
            log.info("job kinds filled in jobs=%d", len(kinds))

    async def queue_summary(self) -> list[QueueKind]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {rows.QUEUE_SUMMARY_COLUMNS} FROM jobs WHERE state = %s "
                "GROUP BY needs_kind".encode(),
                (JobState.QUEUED.value,),
            )
            return [rows.queue_kind(r, CODEC) for r in await cursor.fetchall()]

    async def list_queued(
        self, kinds: Collection[str], limit: int, exclude: Collection[str] = ()
    ) -> list[QueuedJob]:
        if not kinds or limit <= 0:
            return []
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {rows.QUEUED_JOB_COLUMNS} FROM jobs "
                "WHERE state = %s AND needs_kind = ANY(%s) AND NOT (job_id = ANY(%s)) "
                "ORDER BY priority, submitted_at, job_id LIMIT %s".encode(),
                (JobState.QUEUED.value, list(kinds), list(exclude), limit),
            )
            return [rows.queued_job(r, CODEC) for r in await cursor.fetchall()]

    async def set_queue_reasons(
        self, reasons: Mapping[str, str], keep: Collection[str] = ()
    ) -> int:
        changed = 0
        async with self._db.transaction() as conn:
            for kind, reason in reasons.items():
                cursor = await conn.execute(
                    "UPDATE jobs SET queue_reason = %s, updated_at = %s WHERE state = %s "
                    "AND needs_kind = %s AND queue_reason != %s AND NOT (job_id = ANY(%s))",
                    (reason, utcnow(), JobState.QUEUED.value, kind, reason, list(keep)),
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
        async with self._db.transaction() as conn:
            await self._apply(conn, job_id, to_state, reason, utcnow(), updates)
            if event is not None:
                await self._insert_event(conn, event)
            await self._notify(conn, job_id)
            return await self._load(conn, job_id)

    async def _insert_event(self, conn: Conn, event: job_pb2.ProgressEvent) -> bool:
        cursor = await conn.execute(
            "INSERT INTO job_events (job_id, seq, event) VALUES (%s, %s, %s) "
            "ON CONFLICT (job_id, seq) DO NOTHING",
            (event.job_id, event.seq, event_to_json(event)),
        )
        return cursor.rowcount == 1

    async def _apply(
        self,
        conn: Conn,
        job_id: str,
        to_state: JobState,
        reason: str,
        now: datetime,
        updates: dict[str, Any],
    ) -> None:
        """Check and apply one transition inside the caller's transaction.

        The row lock makes the check and the write one step for every replica: a second
        replica moving the same job waits here, then sees the state the first one left.
        """
        cursor = await conn.execute(
            "SELECT state, attempt FROM jobs WHERE job_id = %s FOR UPDATE", (job_id,)
        )
        row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"job {job_id} not found")
        plan = rules.plan_transition(
            JobState(row["state"]), row["attempt"], to_state, reason, updates
        )
        await self._update_row(conn, job_id, plan.updates, now)
        if plan.history is not None:
            await conn.execute(
                rows.insert_history_sql(CODEC).encode(),
                rows.history_values(job_id, plan.history, now, CODEC),
            )

    async def _update_row(
        self, conn: Conn, job_id: str, updates: dict[str, Any], now: datetime
    ) -> None:
        rules.check_field_updates(updates)
        sql, params = rows.update_job_statement(job_id, updates, now, CODEC)
        cursor = await conn.execute(sql.encode(), params)
        if cursor.rowcount == 0:
            raise NotFound(f"job {job_id} not found")

    async def assign_jobs(self, assignments: Sequence[Assignment]) -> list[JobRecord]:
        if not assignments:
            return []
        now = utcnow()
        order = {a.job_id: i for i, a in enumerate(assignments)}
        by_id = {a.job_id: a for a in assignments}
        async with self._db.transaction() as conn:
            # The rows are locked in job_id order first (two passes locking in different
            # orders would deadlock). A row locked after a wait is re-checked against
            # state = QUEUED, so of two replicas assigning the same job only one moves it.
            await conn.execute(
                "SELECT job_id FROM jobs WHERE job_id = ANY(%s) AND state = %s "
                "ORDER BY job_id FOR UPDATE",
                (list(by_id), JobState.QUEUED.value),
            )
            cursor = await conn.execute(
                "UPDATE jobs SET state = %s, assigned_agent = v.agent, attempt = v.attempt, "
                "queue_reason = '', updated_at = %s "
                "FROM unnest(%s::text[], %s::text[], %s::int[]) AS v(job_id, agent, attempt) "
                "WHERE jobs.job_id = v.job_id AND jobs.state = %s RETURNING jobs.*",
                (
                    JobState.ASSIGNED.value,
                    now,
                    [a.job_id for a in assignments],
                    [a.agent for a in assignments],
                    [a.attempt for a in assignments],
                    JobState.QUEUED.value,
                ),
            )
            moved = sorted(await cursor.fetchall(), key=lambda r: order[r["job_id"]])
            if not moved:
                return []
            rules.assignment_updates("", 0)  # the state table allows QUEUED -> ASSIGNED
            history = [
                rows.history_values(
                    r["job_id"],
                    rules.HistoryEntry(
                        JobState.QUEUED,
                        JobState.ASSIGNED,
                        by_id[r["job_id"]].reason,
                        by_id[r["job_id"]].attempt,
                    ),
                    now,
                    CODEC,
                )
                for r in moved
            ]
            async with conn.cursor() as many:
                await many.executemany(rows.insert_history_sql(CODEC).encode(), history)
            await conn.execute(
                "SELECT pg_notify(%s, %s || job_id) FROM unnest(%s::text[]) AS t(job_id)",
                (CHANNEL, f"{self.instance_id}:", [r["job_id"] for r in moved]),
            )
            return await self._records(conn, moved)

    async def update_job(
        self, job_id: str, *, event: job_pb2.ProgressEvent | None = None, **updates: Any
    ) -> JobRecord:
        async with self._db.transaction() as conn:
            await self._update_row(conn, job_id, updates, utcnow())
            if event is not None:
                await self._insert_event(conn, event)
            await self._notify(conn, job_id)
            return await self._load(conn, job_id)

    async def running_jobs_by_agent(self) -> dict[str, list[str]]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT assigned_agent, job_id FROM jobs WHERE assigned_agent IS NOT NULL "
                "AND state = ANY(%s) ORDER BY submitted_at, job_id",
                (_ACTIVE,),
            )
            return rows.jobs_by_agent(await cursor.fetchall())

    async def running_jobs_of(self, agent: str) -> list[str]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT job_id FROM jobs WHERE assigned_agent = %s AND state = ANY(%s) "
                "ORDER BY submitted_at, job_id",
                (agent, _ACTIVE),
            )
            return [row["job_id"] for row in await cursor.fetchall()]

    async def count_running_jobs(self) -> dict[str, int]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT assigned_agent, COUNT(*) AS n FROM jobs WHERE assigned_agent IS NOT NULL "
                "AND state = ANY(%s) GROUP BY assigned_agent",
                (_ACTIVE,),
            )
            return {row["assigned_agent"]: row["n"] for row in await cursor.fetchall()}

    async def count_jobs_by_state(self) -> dict[JobState, int]:
        async with self._db.connection() as conn:
            cursor = await conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            return rows.counts_by_state(await cursor.fetchall())

    # --- events -------------------------------------------------------------------------

    async def append_event(self, event: job_pb2.ProgressEvent) -> bool:
        async with self._db.transaction() as conn:
            stored = await self._insert_event(conn, event)
            if stored:
                await self._notify(conn, event.job_id)
        return stored

    async def list_events(
        self, job_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[job_pb2.ProgressEvent]:
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT event FROM job_events WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (job_id, after_seq, limit),
            )
            found = await cursor.fetchall()
        return [event_from_json(row["event"]) for row in found]

    async def events_with_state(
        self, job_id: str, after_seq: int, limit: int | None = None
    ) -> tuple[JobState, list[job_pb2.ProgressEvent]]:
        # One statement, so one snapshot: a terminal state comes with all of the job's events.
        async with self._db.connection() as conn:
            cursor = await conn.execute(
                "SELECT j.state, e.event FROM jobs j LEFT JOIN LATERAL ("
                "SELECT seq, event FROM job_events WHERE job_id = j.job_id AND seq > %s "
                "ORDER BY seq LIMIT %s) e ON TRUE WHERE j.job_id = %s ORDER BY e.seq",
                (after_seq, limit, job_id),
            )
            found = await cursor.fetchall()
        if not found:
            raise NotFound(f"job {job_id} not found")
        events = [event_from_json(row["event"]) for row in found if row["event"] is not None]
        return JobState(found[0]["state"]), events

    # --- agents -------------------------------------------------------------------------

    async def upsert_agent(self, agent: AgentRecord) -> AgentRecord:
        async with self._db.transaction() as conn:
            await conn.execute(
                rows.upsert_agent_sql(CODEC).encode(), rows.agent_values(agent, CODEC)
            )
            return await self._load_agent(conn, agent.name)

    async def get_agent(self, name: str) -> AgentRecord:
        async with self._db.connection() as conn:
            return await self._load_agent(conn, name)

    async def _load_agent(self, conn: Conn, name: str) -> AgentRecord:
        cursor = await conn.execute("SELECT * FROM agents WHERE name = %s", (name,))
        row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"agent {name} not found")
        return rows.agent_record(row, CODEC)

    async def list_agents(self) -> list[AgentRecord]:
        async with self._db.connection() as conn:
            cursor = await conn.execute("SELECT * FROM agents ORDER BY name")
            return [rows.agent_record(r, CODEC) for r in await cursor.fetchall()]

    async def record_heartbeat(
        self, name: str, now: datetime, capabilities: agent_pb2.Capabilities | None
    ) -> bool:
        body = rows.capabilities_json(capabilities)
        async with self._db.transaction() as conn:
            # GREATEST: heartbeats handled by two replicas never move the time backwards.
            cursor = await conn.execute(
                "UPDATE agents SET last_heartbeat = GREATEST(last_heartbeat, %s), "
                "capabilities = COALESCE(%s, capabilities) WHERE name = %s",
                (now, body, name),
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
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                rows.set_agent_flags_sql(CODEC).encode(),
                rows.agent_flag_values(name, cordoned, draining, drain_deadline, CODEC),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"agent {name} not found")
            return await self._load_agent(conn, name)

    # --- leases of several replicas (database time; postgres_leases.py) -----------------

    async def claim_stream(self, job_id: str, owner: str, lease: timedelta) -> bool:
        return await self._leases.claim_stream(job_id, owner, lease)

    async def claim_streams(
        self, job_ids: Sequence[str], owner: str, lease: timedelta
    ) -> list[str]:
        return await self._leases.claim_streams(job_ids, owner, lease)

    async def renew_streams(self, owner: str, lease: timedelta) -> list[str]:
        return await self._leases.renew_streams(owner, lease)

    async def unowned_active_jobs(self) -> list[str]:
        return await self._leases.unowned_active_jobs()

    async def release_streams(self, owner: str) -> None:
        await self._leases.release_streams(owner)

    async def claim_role(self, role: str, owner: str, lease: timedelta) -> bool:
        return await self._leases.claim_role(role, owner, lease)

    async def grant_streams(self, grants: Mapping[str, str], lease: timedelta) -> list[str]:
        return await self._leases.grant_streams(grants, lease)

    async def notify_dispatchers(self, names: Collection[str]) -> None:
        await self._leases.notify_dispatchers(names)

    async def renew_assigned_streams(self, owner: str, lease: timedelta) -> list[str]:
        return await self._leases.renew_assigned_streams(owner, lease)

    async def announce_replica(self, owner: str, lease: timedelta) -> None:
        await self._leases.announce_replica(owner, lease)

    async def stream_loads(self) -> dict[str, int]:
        return await self._leases.stream_loads()

    def start_dispatch_feed(self, on_notice: Callable[[str | None], None]) -> None:
        self._dispatch_feed = ChangeFeed(
            self.url, self.instance_id, on_notice, lambda _live: None, channel=DISPATCH_CHANNEL
        )
        self._dispatch_feed.start()

    # --- progress in batches ------------------------------------------------------------

    async def record_progress(self, writes: Sequence[ProgressWrite]) -> dict[str, JobStatus]:
        if not writes:
            return {}
        batch = list(writes)
        bodies = progress_rows(batch)
        now = utcnow()
        async with self._db.transaction() as conn:
            # The rows locked in job_id order (as assign_jobs does: no deadlock with a replica
            # writing some of the same jobs), and read as committed by anyone before us.
            found_rows = await conn.execute(
                f"SELECT {rows.JOB_STATUS_COLUMNS} FROM jobs WHERE job_id = ANY(%s) "
                "ORDER BY job_id FOR UPDATE",
                ([write.job_id for write in batch],),
            )
            found, written = rows.progress_outcome(
                batch,
                {row["job_id"]: rows.job_status(row, CODEC) for row in await found_rows.fetchall()},
                now,
            )
            if not written:
                return found
            async with conn.cursor() as cursor:
                updates = [rows.progress_update_params(w, now, CODEC) for w in batch]
                await cursor.executemany(
                    rows.progress_update_statement(CODEC),
                    [params for params in updates if params[-1] in written],
                )
                stored = [body for body in bodies if body[0] in written]
                if stored:
                    await cursor.executemany(
                        "INSERT INTO job_events (job_id, seq, event) VALUES (%s, %s, %s) "
                        "ON CONFLICT (job_id, seq) DO NOTHING",
                        stored,
                    )
                await cursor.executemany(
                    "SELECT pg_notify(%s, %s)",
                    [(CHANNEL, f"{self.instance_id}:{job_id}") for job_id in sorted(written)],
                )
            return found

    async def record_events(
        self, job_id: str, events: Sequence[job_pb2.ProgressEvent], **updates: Any
    ) -> JobRecord:
        bodies = event_rows(job_id, events, updates)
        async with self._db.transaction() as conn:
            # The row first: it is locked until the commit, and an unknown job is NotFound
            # before any event is inserted.
            await self._update_row(conn, job_id, updates, utcnow())
            if bodies:
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO job_events (job_id, seq, event) VALUES (%s, %s, %s) "
                        "ON CONFLICT (job_id, seq) DO NOTHING",
                        bodies,
                    )
            await self._notify(conn, job_id)
            return await self._load(conn, job_id)
