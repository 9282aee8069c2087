"""Rows of the store's tables and the records they hold, for every backend: pure, no I/O.

The column lists and the statements that name them live here once; a backend passes its
:class:`Codec`, which says how its driver takes and gives timestamps and flags and which
parameter mark it uses.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from google.protobuf import json_format

from controlplane.capabilities import needs_kind
from controlplane.models import AgentRecord, JobRecord, QueuedJob, QueueKind, Transition
from controlplane.store.base import JobStatus, ProgressWrite
from controlplane.store.rules import ADMISSION_PATH, HistoryEntry, admission_history
from protocol.gen.h2k.v1 import agent_pb2
from protocol.spec import JobSpec
from protocol.states import JobState


class Row(Protocol):
    """A fetched row, read by column name (sqlite3.Row, psycopg's dict rows)."""

    def __getitem__(self, key: str, /) -> Any: ...


class Codec:
    """How a driver takes and gives column values; this one passes them through (psycopg).

    SQLite keeps timestamps as ISO 8601 text and flags as integers: its codec overrides the
    four conversions and the parameter mark.
    """

    mark = "%s"

    def encode_time(self, value: datetime) -> Any:
        return value

    def decode_time(self, value: Any) -> datetime:
        return value

    def encode_flag(self, value: bool) -> Any:
        return value

    def decode_flag(self, value: Any) -> bool:
        return bool(value)

    def optional_time(self, value: datetime | None) -> Any:
        return None if value is None else self.encode_time(value)

    def optional_flag(self, value: bool | None) -> Any:
        return None if value is None else self.encode_flag(value)

    def decoded_time(self, value: Any) -> datetime | None:
        return None if value is None else self.decode_time(value)

    def marks(self, count: int) -> str:
        """``count`` parameter marks, comma separated."""
        return ", ".join([self.mark] * count)

    def column_value(self, name: str, value: Any) -> Any:
        """A job field as its column stores it."""
        if name == "result":
            return None if value is None else json.dumps(value, sort_keys=True)
        if isinstance(value, bool):
            return self.encode_flag(value)
        if isinstance(value, datetime):
            return self.encode_time(value)
        return value


# --- jobs -------------------------------------------------------------------------------

NEW_JOB_COLUMNS = (
    "job_id",
    "spec",
    "fingerprint",
    "state",
    "priority",
    "submitted_at",
    "updated_at",
    "trace_context",
    "needs_kind",
)
HISTORY_COLUMNS = ("job_id", "from_state", "to_state", "time", "reason", "attempt")


def insert_job_sql(codec: Codec) -> str:
    """INSERT of a new job's row (:func:`new_job`); it skips a job_id stored already
    and returns the job_id only when it inserted."""
    return (
        f"INSERT INTO jobs ({', '.join(NEW_JOB_COLUMNS)}) "
        f"VALUES ({codec.marks(len(NEW_JOB_COLUMNS))}) "
        "ON CONFLICT (job_id) DO NOTHING RETURNING job_id"
    )


@dataclass(frozen=True)
class NewJob:
    """A job just submitted: the rows a backend inserts (the job already admitted, in the
    last state of :data:`~controlplane.store.rules.ADMISSION_PATH`, with its admission
    history) and the record that answers the submit once they are committed, equal to what
    reading them back would give."""

    values: tuple[Any, ...]  # of NEW_JOB_COLUMNS
    history: list[tuple[Any, ...]]  # of HISTORY_COLUMNS, in order
    record: JobRecord


def new_job(spec: JobSpec, now: datetime, trace_context: str, codec: Codec) -> NewJob:
    """The rows and the record of a job submitted at ``now``."""
    state = ADMISSION_PATH[-1]
    fingerprint = spec.fingerprint()
    entries = admission_history(spec)
    stamp = codec.encode_time(now)
    values = (
        spec.job_id,
        spec.model_dump_json(),
        fingerprint,
        state.value,
        spec.execution_policy.priority,
        stamp,
        stamp,
        trace_context,
        needs_kind(spec),
    )
    history = [history_values(spec.job_id, e, now, codec) for e in entries]
    record = JobRecord(
        job_id=spec.job_id,
        spec=spec,
        fingerprint=fingerprint,
        state=state,
        submitted_at=now,
        updated_at=now,
        history=[Transition(e.from_state, e.to_state, now, e.reason, e.attempt) for e in entries],
        trace_context=trace_context,
    )
    return NewJob(values, history, record)


def insert_history_sql(codec: Codec) -> str:
    return (
        f"INSERT INTO job_transitions ({', '.join(HISTORY_COLUMNS)}) "
        f"VALUES ({codec.marks(len(HISTORY_COLUMNS))})"
    )


def history_values(
    job_id: str, entry: HistoryEntry, now: datetime, codec: Codec
) -> tuple[Any, ...]:
    """The values of :data:`HISTORY_COLUMNS` for one history row."""
    return (
        job_id,
        entry.from_state.value,
        entry.to_state.value,
        codec.encode_time(now),
        entry.reason,
        entry.attempt,
    )


def update_job_statement(
    job_id: str, updates: dict[str, Any], now: datetime, codec: Codec
) -> tuple[str, list[Any]]:
    """The UPDATE of a job's fields (checked by the caller against UPDATABLE_FIELDS, so
    column names never come from a caller's text) and its parameters."""
    columns = {name: codec.column_value(name, value) for name, value in updates.items()}
    columns["updated_at"] = codec.encode_time(now)
    assignments = ", ".join(f"{name} = {codec.mark}" for name in columns)
    sql = f"UPDATE jobs SET {assignments} WHERE job_id = {codec.mark}"
    return sql, [*columns.values(), job_id]


# --- progress of many jobs in one write (JobStore.record_progress) --------------------------

JOB_STATUS_COLUMNS = (
    "job_id, state, attempt, assigned_agent, cancel_requested, updated_at, last_seq"
)


def progress_update_statement(codec: Codec) -> str:
    """The UPDATE one :class:`ProgressWrite` makes, for an executemany over many jobs."""
    m = codec.mark
    return (
        f"UPDATE jobs SET last_seq = {m}, phase = {m}, progress_percent = {m}, "
        f"updated_at = {m} WHERE job_id = {m}"
    )


def progress_update_params(write: ProgressWrite, now: datetime, codec: Codec) -> tuple[Any, ...]:
    return (
        write.last_seq,
        write.phase,
        write.progress_percent,
        codec.encode_time(now),
        write.job_id,
    )


def progress_outcome(
    writes: Sequence[ProgressWrite], found: dict[str, JobStatus], now: datetime
) -> tuple[dict[str, JobStatus], set[str]]:
    """What record_progress answers for each found job, and which jobs it writes: those still
    where their write's ``follows`` says (every found job, for writes without one)."""
    marks = {w.job_id: w.follows for w in writes}
    written = {job_id for job_id, status in found.items() if status.matches(marks.get(job_id))}
    answered = {
        job_id: replace(status, updated_at=now, written=job_id in written)
        for job_id, status in found.items()
    }
    return answered, written


def job_status(row: Row, codec: Codec) -> JobStatus:
    return JobStatus(
        state=JobState(row["state"]),
        attempt=row["attempt"],
        assigned_agent=row["assigned_agent"],
        cancel_requested=codec.decode_flag(row["cancel_requested"]),
        updated_at=codec.decode_time(row["updated_at"]),
        last_seq=row["last_seq"],
    )


@functools.lru_cache(maxsize=1024)
def parse_spec(body: str) -> JobSpec:
    """A stored spec, parsed once while it is in use (specs are frozen, so sharing is safe)."""
    return JobSpec.model_validate_json(body)


def transition_record(row: Row, codec: Codec) -> Transition:
    return Transition(
        from_state=JobState(row["from_state"]),
        to_state=JobState(row["to_state"]),
        time=codec.decode_time(row["time"]),
        reason=row["reason"],
        attempt=row["attempt"],
    )


def job_record(
    row: Row, history: list[Transition], codec: Codec, spec: JobSpec | None = None
) -> JobRecord:
    """The record of a job row; ``spec``, when given, is the one the row stores."""
    return JobRecord(
        job_id=row["job_id"],
        spec=spec or parse_spec(row["spec"]),
        fingerprint=row["fingerprint"],
        state=JobState(row["state"]),
        submitted_at=codec.decode_time(row["submitted_at"]),
        updated_at=codec.decode_time(row["updated_at"]),
        attempt=row["attempt"],
        assigned_agent=row["assigned_agent"],
        queue_reason=row["queue_reason"],
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"],
        started_at=codec.decoded_time(row["started_at"]),
        finished_at=codec.decoded_time(row["finished_at"]),
        last_seq=row["last_seq"],
        phase=row["phase"],
        progress_percent=row["progress_percent"],
        cancel_requested=codec.decode_flag(row["cancel_requested"]),
        history=history,
        trace_context=row["trace_context"],
    )


def missing_kinds(rows: Iterable[Row]) -> list[tuple[str, str]]:
    """(needs_kind, job_id) of (job_id, spec) rows stored before kinds were kept."""
    return [(needs_kind(JobSpec.model_validate_json(r["spec"])), r["job_id"]) for r in rows]


# --- the queue --------------------------------------------------------------------------

QUEUED_JOB_COLUMNS = "job_id, priority, submitted_at, attempt, needs_kind"
QUEUE_SUMMARY_COLUMNS = "needs_kind, COUNT(*) AS n, MIN(submitted_at) AS oldest"


def queued_job(row: Row, codec: Codec) -> QueuedJob:
    return QueuedJob(
        job_id=row["job_id"],
        priority=row["priority"],
        submitted_at=codec.decode_time(row["submitted_at"]),
        attempt=row["attempt"],
        kind=row["needs_kind"],
    )


def queue_kind(row: Row, codec: Codec) -> QueueKind:
    return QueueKind(row["needs_kind"], row["n"], codec.decode_time(row["oldest"]))


def jobs_by_agent(rows: Iterable[Row]) -> dict[str, list[str]]:
    """Job ids grouped by agent, from (assigned_agent, job_id) rows, in row order."""
    running: dict[str, list[str]] = {}
    for row in rows:
        running.setdefault(row["assigned_agent"], []).append(row["job_id"])
    return running


def counts_by_state(rows: Iterable[Row]) -> dict[JobState, int]:
    """Every state's count (zero when absent) from (state, n) rows."""
    counts = dict.fromkeys(JobState, 0)
    for row in rows:
        counts[JobState(row["state"])] = row["n"]
    return counts


# --- agents -----------------------------------------------------------------------------

AGENT_COLUMNS = (
    "name",
    "address",
    "capabilities",
    "max_concurrent_jobs",
    "registered_at",
    "last_heartbeat",
    "version",
)


def upsert_agent_sql(codec: Codec) -> str:
    """Insert or replace a registration; the cordon and drain flags are left as they are."""
    replaced = ", ".join(f"{name} = excluded.{name}" for name in AGENT_COLUMNS[1:])
    return (
        f"INSERT INTO agents ({', '.join(AGENT_COLUMNS)}) "
        f"VALUES ({codec.marks(len(AGENT_COLUMNS))}) "
        f"ON CONFLICT (name) DO UPDATE SET {replaced}"
    )


def agent_values(agent: AgentRecord, codec: Codec) -> tuple[Any, ...]:
    """The values of :data:`AGENT_COLUMNS`."""
    return (
        agent.name,
        agent.address,
        capabilities_json(agent.capabilities),
        agent.max_concurrent_jobs,
        codec.encode_time(agent.registered_at),
        codec.encode_time(agent.last_heartbeat),
        agent.version,
    )


def set_agent_flags_sql(codec: Codec) -> str:
    """Change the flags that are given (a NULL parameter keeps a flag as it is)."""
    m = codec.mark
    return (
        f"UPDATE agents SET cordoned = COALESCE({m}, cordoned), "
        f"draining = COALESCE({m}, draining), "
        f"drain_deadline = COALESCE({m}, drain_deadline) WHERE name = {m}"
    )


def agent_flag_values(
    name: str,
    cordoned: bool | None,
    draining: bool | None,
    drain_deadline: datetime | None,
    codec: Codec,
) -> Sequence[Any]:
    return (
        codec.optional_flag(cordoned),
        codec.optional_flag(draining),
        codec.optional_time(drain_deadline),
        name,
    )


def capabilities_json(capabilities: agent_pb2.Capabilities | None) -> str | None:
    """Capabilities as their column stores them (None stays None)."""
    if capabilities is None:
        return None
    return json_format.MessageToJson(capabilities, indent=None)


@functools.lru_cache(maxsize=1024)
def _capabilities_wire(body: str) -> bytes:
    """Stored capabilities (JSON) in wire form: parsed once per distinct body."""
    return json_format.Parse(body, agent_pb2.Capabilities()).SerializeToString()


def stored_capabilities(body: str) -> agent_pb2.Capabilities:
    """A fresh message each time (callers may keep or change it); the JSON is parsed once."""
    return agent_pb2.Capabilities.FromString(_capabilities_wire(body))


def agent_record(row: Row, codec: Codec) -> AgentRecord:
    return AgentRecord(
        name=row["name"],
        address=row["address"],
        capabilities=stored_capabilities(row["capabilities"]),
        max_concurrent_jobs=row["max_concurrent_jobs"],
        registered_at=codec.decode_time(row["registered_at"]),
        last_heartbeat=codec.decode_time(row["last_heartbeat"]),
        version=row["version"],
        cordoned=codec.decode_flag(row["cordoned"]),
        draining=codec.decode_flag(row["draining"]),
        drain_deadline=codec.decoded_time(row["drain_deadline"]),
    )
