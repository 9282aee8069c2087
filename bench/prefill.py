"""A store already holding many finished jobs, written fast and as the control plane writes them.

Bar 6 of issue 17 runs the wave on a SQLite store that already holds a million finished jobs.
Through the store API that takes ~13 minutes; this writes the same rows directly into the
file in large ``executemany`` transactions, before any control plane opens it:

- each job's row, its history and its progress events are built with the store's own row
  builders and rules (:mod:`controlplane.store.rows`, :mod:`controlplane.store.rules`): the
  new job's values as ``create_job`` writes them, then each move planned by
  ``rules.plan_transition`` and each history row by ``rows.history_values``, the way the
  control plane records a wave job (submit, assign, the agent's RUNNING, PROGRESSING ...
  terminal event);
- the events are the wave's fake agents' events (``bench.fake_agents.progress_event``)
  encoded by ``event_to_json`` once per (outcome, seq) with the job id, agent, time and send
  stamp left as fields to fill in, which is the same text ``event_to_json`` writes for each
  job (checked on a sample by :func:`check_event_bodies` and in ``tests/bench``).

Outcomes (``--failed-share``, ``--cancelled-share``, the rest COMPLETED):

  COMPLETED  CREATED, VALIDATED, QUEUED, ASSIGNED, RUNNING, PROGRESSING, COMPLETED
             (7 history rows), ``events`` events: RUNNING, PROGRESSING ..., COMPLETED
  FAILED     the same path to PROGRESSING, then FAILED half way (INVALID_IMAGE, no retry):
             7 history rows, ``events // 2 + 1`` events
  CANCELLED  cancelled while QUEUED: 4 history rows, no events

    python -m bench.prefill --jobs 1000000 --db /path/h2k.db   # writes, checks, sizes
    python -m bench.prefill --quick                            # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import print_table, spec_message
from bench.fake_agents import progress_event
from controlplane.models import error_result, result_to_dict
from controlplane.store import SqliteStore, rows, rules, schema
from controlplane.store import sqlite as sqlite_module
from controlplane.store.base import UPDATABLE_FIELDS, Assignment
from controlplane.store.schema import SCHEMA_VERSION
from controlplane.store.sqlite import CODEC
from protocol.conversion import event_to_json, spec_from_proto, timestamp_to_proto, utcnow
from protocol.errors import ErrorCode
from protocol.gen.h2k.v1 import job_pb2, services_pb2
from protocol.spec import JobSpec
from protocol.states import JobState

JOB_ID_FORMAT = "done-{:07d}"
CHUNK = 5_000  # jobs per transaction
WORKERS = 2  # processes building rows (the machine's cores; the writer mostly waits)
AGENTS = 100  # the wave's fleet: job i ran on node-w{i % AGENTS}
SUBMIT_SPACING = timedelta(milliseconds=10)  # between two prefilled jobs' submits
JOB_SECONDS = 10.0
FAILURE = "qemu-img: Could not open '/data/input/vm.vmdk': VMDK descriptor: invalid extent"
CANCEL_REASON = "cancelled on request"
ASSIGNED_AFTER = timedelta(milliseconds=50)  # submit -> assignment
STARTED_AFTER = timedelta(milliseconds=100)  # submit -> the agent's RUNNING

# Placeholders event_to_json writes through unchanged; each becomes a field to fill in.
_JOB = "@@job@@"
_AGENT = "@@agent@@"
_SENT = 1_111_111_111_111_111_111
_TIME = datetime(2001, 1, 1, 1, 1, 1, 111111, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PrefillPlan:
    """How many finished jobs, which outcomes, how many events."""

    jobs: int
    events: int = 21  # per COMPLETED job, as the wave's (RUNNING, 19 PROGRESSING, COMPLETED)
    failed_share: float = 0.03
    cancelled_share: float = 0.02

    def outcome(self, index: int) -> JobState:
        """Job ``index``'s end, spread evenly over the jobs (every 100: 3 FAILED, 2 CANCELLED)."""
        slot = (index * 7919) % 10_000 / 10_000  # a fixed scatter, not a random one
        if slot < self.cancelled_share:
            return JobState.CANCELLED
        if slot < self.cancelled_share + self.failed_share:
            return JobState.FAILED
        return JobState.COMPLETED

    @property
    def interval(self) -> float:
        """Seconds between two events of a job (the wave's 0.5 s with 21 events)."""
        return JOB_SECONDS / max(1, self.events - 1)

    def event_count(self, outcome: JobState) -> int:
        if outcome is JobState.CANCELLED:
            return 0
        if outcome is JobState.FAILED:
            return self.events // 2 + 1
        return self.events


# --- one job's rows ---------------------------------------------------------------------


def agent_event(
    job_id: str, agent: str, seq: int, state: int, percent: float, when: datetime
) -> job_pb2.ProgressEvent:
    """An event as the wave's fake agent sends it (its progress_event), at ``when``."""
    request = services_pb2.ExecuteJobRequest(spec=job_pb2.JobSpec(job_id=job_id), attempt=1)
    event = progress_event(request, agent, seq, state, percent)
    event.time.FromDatetime(when)
    event.details["sent_ns"] = str(_ns(when))
    return event


def _ns(when: datetime) -> int:
    """``when`` as time.time_ns() would give it (integer arithmetic: no float rounding)."""
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def run_events(
    job_id: str, agent: str, outcome: JobState, count: int, started: datetime, interval: float
) -> list[job_pb2.ProgressEvent]:
    """The events of one attempt: RUNNING, PROGRESSING every ``interval`` s, the terminal one."""
    steps = max(1, count - 1)
    events = [agent_event(job_id, agent, 1, job_pb2.JOB_STATE_RUNNING, 0, started)]
    for seq in range(2, count):
        when = started + timedelta(seconds=interval * (seq - 1))
        percent = 100 * (seq - 1) / steps
        events.append(agent_event(job_id, agent, seq, job_pb2.JOB_STATE_PROGRESSING, percent, when))
    end = started + timedelta(seconds=interval * (count - 1))
    if outcome is JobState.COMPLETED:
        done = agent_event(job_id, agent, count, job_pb2.JOB_STATE_COMPLETED, 100, end)
        done.result.outputs.add(kind="image", path="/data/output/vm.qcow2", format="qcow2")
    else:
        percent = events[-1].progress_percent
        done = agent_event(job_id, agent, count, job_pb2.JOB_STATE_FAILED, percent, end)
        done.result.error.CopyFrom(
            job_pb2.JobError(phase="convert", code=ErrorCode.INVALID_IMAGE, message=FAILURE)
        )
    events.append(done)
    return events


class JobRows:
    """One job's rows, applied move by move the way the store applies them."""

    def __init__(self, spec: JobSpec, submitted: datetime) -> None:
        # Admitted as the store admits it: the row in the admission path's last state, with
        # the path's history rows beside it.
        new = rows.new_job(spec, submitted, "", CODEC)
        self.job_id = spec.job_id
        self.columns: dict[str, Any] = dict(zip(rows.NEW_JOB_COLUMNS, new.values, strict=True))
        self.columns.update(
            attempt=0,
            assigned_agent=None,
            queue_reason="",
            result=None,
            error=None,
            started_at=None,
            finished_at=None,
            last_seq=0,
            phase="",
            progress_percent=0.0,
            cancel_requested=CODEC.encode_flag(False),
        )
        self.state = rules.ADMISSION_PATH[-1]
        self.history: list[tuple[Any, ...]] = list(new.history)

    def move(self, to_state: JobState, reason: str, when: datetime, **updates: Any) -> None:
        """A transition as the store's ``_apply`` writes it (row fields, history row)."""
        plan = rules.plan_transition(self.state, self.columns["attempt"], to_state, reason, updates)
        self.update(when, **plan.updates)
        if plan.history is not None:
            self.history.append(rows.history_values(self.job_id, plan.history, when, CODEC))
        self.state = to_state

    def update(self, when: datetime, **updates: Any) -> None:
        """Field updates as ``rows.update_job_statement`` writes them (and updated_at)."""
        for name, value in updates.items():
            self.columns[name] = CODEC.column_value(name, value)
        self.columns["updated_at"] = CODEC.encode_time(when)


@functools.lru_cache(maxsize=8)
def attempt_script(plan: PrefillPlan, outcome: JobState) -> AttemptScript:
    """What the store takes from an attempt's events (the same for every job of an outcome)."""
    count = plan.event_count(outcome)
    events = run_events(_JOB, _AGENT, outcome, count, _TIME, plan.interval)
    first, second, *middle, last = events
    return AttemptScript(
        running=_event_fields(first),
        progressing=_event_fields(second),
        batch=_event_fields(middle[-1]) if middle else None,
        batch_offset=timedelta(seconds=plan.interval * (count - 2)),
        last=_event_fields(last),
        last_offset=timedelta(seconds=plan.interval * (count - 1)),
        interval=timedelta(seconds=plan.interval),
        result=result_to_dict(last.result),
        error=last.result.error.message or None,
    )


@dataclass(frozen=True)
class AttemptScript:
    running: dict[str, Any]
    progressing: dict[str, Any]
    batch: dict[str, Any] | None  # the fields of the one record_events write, if any
    batch_offset: timedelta
    last: dict[str, Any]
    last_offset: timedelta
    interval: timedelta
    result: dict[str, Any]
    error: str | None


def job_rows(
    spec: JobSpec, outcome: JobState, agent: str, plan: PrefillPlan, submitted: datetime
) -> JobRows:
    """The rows of a prefilled job (its events are :class:`EventBodies`')."""
    job = JobRows(spec, submitted)
    if outcome is JobState.CANCELLED:
        when = submitted + timedelta(seconds=1)
        job.move(
            JobState.CANCELLED,
            CANCEL_REASON,
            when,
            result=error_result("", ErrorCode.CANCELLED, CANCEL_REASON),
            error=CANCEL_REASON,
            finished_at=when,
        )
        return job
    assigned = submitted + ASSIGNED_AFTER
    assignment = Assignment(job.job_id, agent, 1)
    job.move(JobState.ASSIGNED, assignment.reason, assigned, **rules.assignment_updates(agent, 1))
    script = attempt_script(plan, outcome)
    started = submitted + STARTED_AFTER
    running = f"started on agent {agent}"
    job.move(JobState.RUNNING, running, started, **script.running, started_at=started)
    job.move(JobState.PROGRESSING, "convert", started + script.interval, **script.progressing)
    if script.batch is not None:  # one record_events write: PROGRESSING -> PROGRESSING
        job.update(started + script.batch_offset, **script.batch)
    end = started + script.last_offset
    reason = f"completed on agent {agent}" if outcome is JobState.COMPLETED else FAILURE
    job.move(
        outcome,
        reason,
        end,
        **script.last,
        result=script.result,
        error=script.error,
        finished_at=end,
    )
    return job


class RowTemplate:
    """:func:`job_rows` of one outcome, built once, with the per-job values as fields.

    A job's rows differ from another's of the same outcome only in its id, its agent and
    its times (fixed offsets from its submit); those become format fields, filled in per job
    (:func:`check_rows` compares the result with :func:`job_rows` on a sample).
    """

    def __init__(self, plan: PrefillPlan, outcome: JobState) -> None:
        spec = _template_spec().model_copy(update={"job_id": _JOB, "created_at": _TIME})
        built = job_rows(spec, outcome, _AGENT, plan, _TIME)
        script = attempt_script(plan, outcome) if outcome is not JobState.CANCELLED else None
        offsets = {timedelta(0), timedelta(seconds=1), ASSIGNED_AFTER, STARTED_AFTER}
        if script is not None:
            for after in (script.interval, script.batch_offset, script.last_offset):
                offsets.add(STARTED_AFTER + after)
        self.offsets = sorted(offsets)
        self._times = {
            CODEC.encode_time(_TIME + o): f"{{t{i}}}" for i, o in enumerate(self.offsets)
        }
        self._times[json_time(_TIME)] = "{created}"
        self.fingerprint = self._field(_canonical(spec))
        self.job = [self._field(v) for v in (built.columns[c] for c in JOB_COLUMNS)]
        self.history = [[self._field(v) for v in row] for row in built.history]
        self.state = built.state

    def _field(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.replace("{", "{{").replace("}", "}}")
        text = text.replace(_JOB, "{job}").replace(_AGENT, "{agent}")
        for stamp, name in self._times.items():
            text = text.replace(stamp, name)
        return text if text != value else value

    def rows(
        self, job_id: str, agent: str, submitted: datetime
    ) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
        """The job's row (JOB_COLUMNS) and its history rows."""
        fields = {f"t{i}": CODEC.encode_time(submitted + o) for i, o in enumerate(self.offsets)}
        fields.update(job=job_id, agent=agent, created=json_time(submitted))
        fingerprint = hashlib.sha256(self.fingerprint.format(**fields).encode()).hexdigest()

        def fill(value: Any) -> Any:
            return value.format(**fields) if isinstance(value, str) else value

        job = [fill(v) for v in self.job]
        job[JOB_COLUMNS.index("fingerprint")] = fingerprint
        return tuple(job), [tuple(fill(v) for v in row) for row in self.history]


def _canonical(spec: JobSpec) -> str:
    """The text :meth:`JobSpec.fingerprint` hashes (checked against it in check_rows)."""
    body = spec.model_dump(mode="json", exclude={"created_at"})
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _event_fields(event: job_pb2.ProgressEvent) -> dict[str, Any]:
    return {
        "last_seq": event.seq,
        "phase": event.phase,
        "progress_percent": event.progress_percent,
    }


def _when(event: job_pb2.ProgressEvent) -> datetime:
    return event.time.ToDatetime(tzinfo=UTC)


def agent_name(index: int) -> str:
    return f"node-w{index % AGENTS:04d}"


# --- events: encoded once per (outcome, seq), filled in per job --------------------------


def json_time(when: datetime) -> str:
    """A UTC time as protobuf's JSON writes a Timestamp: 0, 3 or 6 fraction digits, Z."""
    micros = when.microsecond
    if micros == 0:
        fraction = ""
    elif micros % 1000 == 0:
        fraction = f".{micros // 1000:03d}"
    else:
        fraction = f".{micros:06d}"
    return f"{when.isoformat(timespec='seconds')[:19]}{fraction}Z"


class EventBodies:
    """``event_to_json`` of each (outcome, seq) with the per-job values left as fields."""

    def __init__(self, plan: PrefillPlan) -> None:
        self._interval = timedelta(seconds=plan.interval)
        self._templates: dict[JobState, list[str]] = {}
        for outcome in (JobState.COMPLETED, JobState.FAILED):
            count = plan.event_count(outcome)
            events = run_events(_JOB, _AGENT, outcome, count, _TIME, plan.interval)
            self._templates[outcome] = [self._template(e) for e in events]

    @staticmethod
    def _template(event: job_pb2.ProgressEvent) -> str:
        sent = event.details["sent_ns"]
        stamp = timestamp_to_proto(_when(event)).ToJsonString()  # type: ignore[union-attr]
        body = event_to_json(event).replace("{", "{{").replace("}", "}}")
        return (
            body.replace(_JOB, "{job}")
            .replace(_AGENT, "{agent}")
            .replace(f'"{sent}"', '"{sent}"')
            .replace(f'"{stamp}"', '"{time}"')
        )

    def values(
        self, job_id: str, agent: str, outcome: JobState, started: datetime
    ) -> Iterator[tuple[str, int, str]]:
        """The (job_id, seq, event) rows of one job whose RUNNING was sent at ``started``."""
        for seq, template in enumerate(self._templates.get(outcome, ()), start=1):
            when = started + self._interval * (seq - 1)
            body = template.format(
                job=job_id,
                agent=agent,
                sent=_ns(when),
                time=json_time(when),
            )
            yield job_id, seq, body


# --- writing ----------------------------------------------------------------------------


@dataclass
class PrefillStats:
    jobs: int
    by_state: dict[str, int]
    history_rows: int
    event_rows: int
    seconds: float


def prefill(db: Path, plan: PrefillPlan, end: datetime | None = None) -> PrefillStats:
    """Write ``plan.jobs`` finished jobs into a new store file at ``db``.

    The schema is the store's (``SqliteStore.open`` creates it); the last prefilled job
    finished before ``end`` (default: now), the first ``jobs`` x 10 ms earlier. Rows are
    built by ``WORKERS`` processes, chunk by chunk, and written here in job order.
    """
    began = time.monotonic()
    asyncio.run(_create_schema(db))
    first = first_submit(plan, end or utcnow())
    stats = PrefillStats(plan.jobs, {}, 0, 0, 0.0)
    insert_job = (
        f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({CODEC.marks(len(JOB_COLUMNS))})"
    )
    chunks = [(plan, first, start) for start in range(0, plan.jobs, CHUNK)]
    conn = sqlite3.connect(db, isolation_level=None)
    context = multiprocessing.get_context("spawn")
    try:
        conn.execute("PRAGMA synchronous = OFF")  # a crash mid-prefill leaves a file to delete
        with context.Pool(WORKERS) as pool:
            for built in pool.imap(_build_chunk, chunks):
                conn.execute("BEGIN")
                conn.executemany(insert_job, built.jobs)
                conn.executemany(rows.insert_history_sql(CODEC), built.history)
                conn.executemany(
                    "INSERT INTO job_events (job_id, seq, event) VALUES (?, ?, ?)", built.events
                )
                conn.execute("COMMIT")
                stats.history_rows += len(built.history)
                stats.event_rows += len(built.events)
                for state, n in built.by_state.items():
                    stats.by_state[state] = stats.by_state.get(state, 0) + n
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    stats.seconds = time.monotonic() - began
    return stats


def first_submit(plan: PrefillPlan, end: datetime) -> datetime:
    """When the first prefilled job was submitted, so that the last ended before ``end``."""
    return end - SUBMIT_SPACING * plan.jobs - timedelta(seconds=JOB_SECONDS + 1)


@dataclass
class BuiltChunk:
    jobs: list[tuple[Any, ...]]
    history: list[tuple[Any, ...]]
    events: list[tuple[str, int, str]]
    by_state: dict[str, int]


def _build_chunk(work: tuple[PrefillPlan, datetime, int]) -> BuiltChunk:
    """The rows of jobs ``start`` .. ``start + CHUNK`` (in a worker process)."""
    plan, first, start = work
    bodies = _event_bodies(plan)
    built = BuiltChunk([], [], [], {})
    for index in range(start, min(plan.jobs, start + CHUNK)):
        submitted = first + SUBMIT_SPACING * index
        job_id, agent, outcome = JOB_ID_FORMAT.format(index), agent_name(index), plan.outcome(index)
        job, history = _row_template(plan, outcome).rows(job_id, agent, submitted)
        built.jobs.append(job)
        built.history.extend(history)
        built.events.extend(bodies.values(job_id, agent, outcome, submitted + STARTED_AFTER))
        built.by_state[outcome.value] = built.by_state.get(outcome.value, 0) + 1
    return built


@functools.lru_cache(maxsize=1)
def _template_spec() -> JobSpec:
    """The wave's spec (validated once); each job is a copy with its id and submit time."""
    return spec_from_proto(spec_message(JOB_ID_FORMAT.format(0)))


@functools.lru_cache(maxsize=4)
def _row_template(plan: PrefillPlan, outcome: JobState) -> RowTemplate:
    return RowTemplate(plan, outcome)


@functools.lru_cache(maxsize=1)
def _event_bodies(plan: PrefillPlan) -> EventBodies:
    return EventBodies(plan)


# Every column a finished job's writes set besides create_job's: the fields the store lets a
# write change (values are taken by column name, so the order is only the INSERT's).
_UPDATED = tuple(sorted(UPDATABLE_FIELDS))
JOB_COLUMNS = (*rows.NEW_JOB_COLUMNS, *_UPDATED)


async def _create_schema(db: Path) -> None:
    if db.exists():
        raise FileExistsError(f"{db}: the prefill writes a new store, this one exists")
    store = SqliteStore(db)
    await store.open()
    await store.close()


# --- a store kept by recipe ----------------------------------------------------------

# Bump when what this module writes changes (the store's own modules are hashed as they are).
PREFILL_FORMAT = 1
CACHE_DIR = Path(tempfile.gettempdir()) / "h2k-bench-prefill"


def recipe_hash(plan: PrefillPlan) -> str:
    """What decides the file's bytes: the plan, this module's format, the store's code."""
    digest = hashlib.sha256(f"{PREFILL_FORMAT} {SCHEMA_VERSION} {plan!r}".encode())
    for module in (rows, rules, schema, sqlite_module):
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:16]


def cached_store(plan: PrefillPlan, cache: Path = CACHE_DIR) -> Path:
    """A prefilled store for ``plan`` under ``cache``, written once per recipe hash.

    Callers copy it (a control plane changes the file it opens).
    """
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"prefill-{plan.jobs}-{recipe_hash(plan)}.db"
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    for leftover in cache.glob(f"{partial.name}*"):
        leftover.unlink()
    stats = prefill(partial, plan)
    print(f"prefilled {stats.jobs} jobs in {stats.seconds:.0f} s into {path}", flush=True)
    partial.rename(path)
    return path


def copy_store(source: Path, target: Path) -> float:
    """Copy a store file (checkpointed: no -wal beside it); returns the seconds it took."""
    began = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return time.monotonic() - began


# --- checking and sizing ----------------------------------------------------------------


def check_event_bodies(plan: PrefillPlan, indexes: list[int], end: datetime) -> int:
    """How many sampled jobs' event bodies differ from ``event_to_json`` of their events."""
    first = first_submit(plan, end)
    bodies = EventBodies(plan)
    wrong = 0
    for index in indexes:
        job_id, agent = JOB_ID_FORMAT.format(index), agent_name(index)
        outcome = plan.outcome(index)
        started = first + SUBMIT_SPACING * index + STARTED_AFTER
        if outcome is JobState.CANCELLED:
            continue
        count = plan.event_count(outcome)
        events = run_events(job_id, agent, outcome, count, started, plan.interval)
        expected = [event_to_json(e) for e in events]
        got = [body for _j, _s, body in bodies.values(job_id, agent, outcome, started)]
        wrong += expected != got
    return wrong


def check_rows(plan: PrefillPlan, indexes: list[int], end: datetime) -> int:
    """How many sampled jobs' rows differ from :func:`job_rows` (the builders, job by job)."""
    first = first_submit(plan, end)
    wrong = 0
    for index in indexes:
        submitted = first + SUBMIT_SPACING * index
        job_id, agent, outcome = JOB_ID_FORMAT.format(index), agent_name(index), plan.outcome(index)
        spec = _template_spec().model_copy(update={"job_id": job_id, "created_at": submitted})
        expected = job_rows(spec, outcome, agent, plan, submitted)
        job, history = _row_template(plan, outcome).rows(job_id, agent, submitted)
        same_job = job == tuple(expected.columns[c] for c in JOB_COLUMNS)
        wrong += not (same_job and history == expected.history)
        wrong += expected.columns["fingerprint"] != spec.fingerprint()
    return wrong


async def read_back(db: Path, plan: PrefillPlan, samples: int = 50) -> dict[str, Any]:
    """Read a sample back through the store API; count jobs by state.

    Raises:
        AssertionError: a sampled job, its history or its events are not what was planned.
    """
    store = SqliteStore(db)
    await store.open()
    try:
        counts = await store.count_jobs_by_state()
        step = max(1, plan.jobs // samples)
        for index in range(0, plan.jobs, step):
            job = await store.get_job(JOB_ID_FORMAT.format(index))
            outcome = plan.outcome(index)
            path = [h.to_state for h in job.history]
            events = await store.list_events(job.job_id)
            assert job.state is outcome, (job.job_id, job.state)
            assert job.finished_at is not None and job.result is not None, job.job_id
            assert [e.seq for e in events] == list(range(1, plan.event_count(outcome) + 1))
            assert job.last_seq == len(events), (job.job_id, job.last_seq)
            assert path[-1] is outcome and path[:2] == [JobState.VALIDATED, JobState.QUEUED]
        listed = {}
        for state in (JobState.FAILED, JobState.CANCELLED):
            page = await store.list_jobs(states=[state], limit=10, with_history=False)
            assert all(j.state is state for j in page.jobs)
            listed[state.value] = len(page.jobs)
    finally:
        await store.close()
    return {"counts": {s.value: n for s, n in counts.items() if n}, "listed": listed}


def table_sizes(db: Path) -> dict[str, int]:
    """Bytes of each table and index in the file (SQLite's dbstat)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        found = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    finally:
        conn.close()
    return {str(name): int(size) for name, size in found}


def size_rows(db: Path, jobs: int) -> list[list[Any]]:
    """Rows of the size table: the file, and each table and index, per job."""
    sizes = table_sizes(db)
    total = db.stat().st_size
    ordered = sorted(sizes.items(), key=lambda item: -item[1])
    out: list[list[Any]] = [["whole file", total / 2**20, total / max(1, jobs)]]
    out += [[name, size / 2**20, size / max(1, jobs)] for name, size in ordered if size > 0]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prefill", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2,000 jobs in a temporary file")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=PrefillPlan(0).events)
    parser.add_argument("--failed-share", type=float, default=PrefillPlan(0).failed_share)
    parser.add_argument("--cancelled-share", type=float, default=PrefillPlan(0).cancelled_share)
    parser.add_argument("--db", type=Path, help="the new store file (default: a temporary one)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.jobs = 2_000
    plan = PrefillPlan(args.jobs, args.events, args.failed_share, args.cancelled_share)
    work = None
    if args.db is None:
        work = Path(tempfile.mkdtemp(prefix="h2k-bench-prefill-"))
        args.db = work / "h2k.db"
    try:
        end = utcnow()
        stats = prefill(args.db, plan, end)
        print(
            f"prefilled {stats.jobs} jobs in {stats.seconds:.1f} s "
            f"({stats.jobs / stats.seconds:,.0f} jobs/s): {stats.by_state}, "
            f"{stats.history_rows} history rows, {stats.event_rows} events"
        )
        sample = list(range(0, plan.jobs, max(1, plan.jobs // 200)))
        wrong = check_event_bodies(plan, sample, end)
        print(f"event bodies equal to event_to_json's: {len(sample) - wrong}/{len(sample)}")
        wrong_rows = check_rows(plan, sample, end)
        print(
            f"job and history rows equal to the builders': {len(sample) - wrong_rows}/{len(sample)}"
        )
        wrong += wrong_rows
        print(f"read back through the store API: {asyncio.run(read_back(args.db, plan))}")
        print_table(
            f"store size, {plan.jobs} finished jobs ({dataclasses.asdict(plan)})",
            ["table or index", "MiB", "bytes per job"],
            size_rows(args.db, plan.jobs),
        )
        return 1 if wrong else 0
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
