"""Log formats, traceparent handling and the trace-context column of the store (no processes)."""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from controlplane.store import open_store
from controlplane.store.sqlite_schema import _SCHEMA_V1, SCHEMA_VERSION
from devsupport.specs import job_spec
from protocol.spec import parse_spec
from protocol.states import JobState
from runtime.health import split_host_port
from runtime.logs import JsonFormatter, TextFormatter, message_fields
from runtime.tracing import (
    context_from_traceparent,
    current_trace_id,
    current_traceparent,
    trace_id_of,
)

_TRACER = TracerProvider().get_tracer("tests")


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("controlplane.x", logging.INFO, __file__, 1, message, args, None)


def test_message_fields_lifts_key_value_pairs() -> None:
    fields = message_fields("job waits job_id=j-1 reason='no agent has nbd' attempt=2 x.y=3")
    assert fields == {"job_id": "j-1", "reason": "no agent has nbd", "attempt": "2"}


def test_json_lines_carry_job_id_and_the_current_trace_id() -> None:
    formatter = JsonFormatter()
    outside = json.loads(formatter.format(_record("job assigned job_id=%s agent=%s", "j-1", "n")))
    assert outside["job_id"] == "j-1" and outside["agent"] == "n"
    assert "trace_id" not in outside
    with _TRACER.start_as_current_span("work") as span:
        inside = json.loads(formatter.format(_record("job done job_id=j-1")))
        expected = trace.format_trace_id(span.get_span_context().trace_id)
        assert current_trace_id() == expected
    assert inside["trace_id"] == expected
    assert inside["level"] == "info" and inside["logger"] == "controlplane.x"
    assert datetime.fromisoformat(inside["time"]).tzinfo is not None


def test_text_lines_add_the_trace_id_inside_a_span() -> None:
    formatter = TextFormatter("%(levelname)s %(message)s")
    assert formatter.format(_record("job done job_id=j-1")) == "INFO job done job_id=j-1"
    with _TRACER.start_as_current_span("work") as span:
        line = formatter.format(_record("job done job_id=j-1"))
    trace_id = trace.format_trace_id(span.get_span_context().trace_id)
    assert line == f"INFO job done job_id=j-1 trace_id={trace_id}"


def test_a_stored_traceparent_continues_its_trace() -> None:
    assert current_traceparent() == "" and context_from_traceparent("") is None
    with _TRACER.start_as_current_span("submit") as submit:
        traceparent = current_traceparent()
    trace_id = trace.format_trace_id(submit.get_span_context().trace_id)
    assert trace_id_of(traceparent) == trace_id
    with _TRACER.start_as_current_span(
        "dispatch", context=context_from_traceparent(traceparent)
    ) as dispatch:
        assert dispatch.get_span_context().trace_id == submit.get_span_context().trace_id
        assert dispatch.parent is not None
        assert dispatch.parent.span_id == submit.get_span_context().span_id
    assert context_from_traceparent("00-garbage") is None
    assert trace_id_of("not-a-traceparent") == ""


def test_split_host_port() -> None:
    assert split_host_port("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert split_host_port("[::]:9100") == ("::", 9100)
    for bad in ("9100", ":9100", "host:", "host:99999", "host:x"):
        try:
            split_host_port(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


async def test_the_store_keeps_the_trace_context_and_upgrades_old_databases(
    tmp_path: Path,
) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # a database written by the first control plane
        conn.executescript(_SCHEMA_V1)
        conn.execute("PRAGMA user_version = 1")
    store = await open_store(f"sqlite:///{db}")
    try:
        now = datetime.now(UTC)
        traced = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        new, created = await store.create_job(parse_spec(job_spec(job_id="traced")), now, traced)
        assert created and new.trace_context == traced
        assert new.to_proto().trace_id == "0af7651916cd43dd8448eb211c80319c"
        untraced, _ = await store.create_job(parse_spec(job_spec(job_id="plain")), now)
        assert untraced.to_proto().trace_id == ""
        assert (await store.get_job("traced")).trace_context == traced
        counts = await store.count_jobs_by_state()
        assert counts[JobState.QUEUED] == 2 and counts[JobState.COMPLETED] == 0
        assert set(counts) == set(JobState)
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
