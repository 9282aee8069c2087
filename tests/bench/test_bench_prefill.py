"""The prefilled store (bench.prefill) holds what the control plane writes for finished jobs.

The prefill writes rows directly into the SQLite file; these tests check that a prefilled
job's row, history and events are the ones the store and the progress recorder write when the
same job goes through them (submit, assignment, the agent's events, cancel), and that the
script's own checks and the wave's ``--prefill-finished`` smoke-run.
"""

from __future__ import annotations

import ast
import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

from bench import memory, prefill, wave
from controlplane.events import EventHub
from controlplane.progress import ProgressRecorder
from controlplane.store import SqliteStore
from controlplane.store.base import Assignment
from protocol.conversion import utcnow
from protocol.states import JobState

# Columns a write stamps with the store's clock (utcnow), not with a time the job carries.
CLOCK_COLUMNS = {"updated_at"}


def _first_of_each_outcome(plan: prefill.PrefillPlan) -> dict[JobState, int]:
    found: dict[JobState, int] = {}
    for index in range(plan.jobs):
        found.setdefault(plan.outcome(index), index)
    return found


async def _through_the_store(db: Path, plan: prefill.PrefillPlan, indexes: dict[JobState, int]):
    """The same jobs as the prefill's, written by the store and the progress recorder."""
    store = SqliteStore(db)
    await store.open()
    try:
        recorder = ProgressRecorder(store, EventHub())
        end = utcnow()
        first = prefill.first_submit(plan, end)
        for outcome, index in indexes.items():
            submitted = first + prefill.SUBMIT_SPACING * index
            job_id, agent = prefill.JOB_ID_FORMAT.format(index), prefill.agent_name(index)
            spec = prefill._template_spec().model_copy(
                update={"job_id": job_id, "created_at": submitted}
            )
            job, _ = await store.create_job(spec, submitted)
            if outcome is JobState.CANCELLED:
                await recorder.end_cancelled(job, prefill.CANCEL_REASON)
                continue
            await store.assign_jobs([Assignment(job_id, agent, 1)])
            count = plan.event_count(outcome)
            started = submitted + prefill.STARTED_AFTER
            events = prefill.run_events(job_id, agent, outcome, count, started, plan.interval)
            await recorder.record_batch(events)
        return end
    finally:
        await store.close()


def _rows(db: Path, job_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        job = dict(conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone())
        history = [
            (r["from_state"], r["to_state"], r["reason"], r["attempt"])
            for r in conn.execute(
                "SELECT * FROM job_transitions WHERE job_id = ? ORDER BY id", (job_id,)
            )
        ]
        events = conn.execute(
            "SELECT seq, event FROM job_events WHERE job_id = ? ORDER BY seq", (job_id,)
        ).fetchall()
    finally:
        conn.close()
    return {"job": job, "history": history, "events": [tuple(e) for e in events]}


def test_prefilled_rows_are_what_the_store_writes_for_the_same_jobs(tmp_path):
    plan = prefill.PrefillPlan(300)
    indexes = _first_of_each_outcome(plan)
    assert set(indexes) == {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}
    live = tmp_path / "live.db"
    end = asyncio.run(_through_the_store(live, plan, indexes))
    filled = tmp_path / "prefilled.db"
    stats = prefill.prefill(filled, plan, end)
    assert stats.jobs == 300 and sum(stats.by_state.values()) == 300
    for outcome, index in indexes.items():
        job_id = prefill.JOB_ID_FORMAT.format(index)
        written, made = _rows(live, job_id), _rows(filled, job_id)
        assert written["job"]["state"] == outcome.value
        clock = set(CLOCK_COLUMNS)
        if outcome is JobState.CANCELLED:
            clock.add("finished_at")  # the control plane's own clock when it cancels
        for column, value in written["job"].items():
            if column not in clock:
                assert made["job"][column] == value, (outcome, column)
        assert made["history"] == written["history"]
        assert made["events"] == written["events"]
        assert len(made["events"]) == plan.event_count(outcome)


def test_prefill_quick_checks_its_rows_and_reports_sizes(capsys):
    assert prefill.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "event bodies equal to event_to_json's: 200/200" in out
    assert "job and history rows equal to the builders': 200/200" in out
    written = ast.literal_eval(re.search(r"jobs/s\): (\{[^}]*\})", out).group(1))
    read = ast.literal_eval(re.search(r"store API: (\{.*\})$", out, re.M).group(1))
    assert sum(written.values()) == 2000 and read["counts"] == written
    assert 0.02 < written["FAILED"] / 2000 < 0.04 and 0.01 < written["CANCELLED"] / 2000 < 0.03
    assert any(line.startswith("| job_events ") for line in out.splitlines())


def test_wave_on_a_prefilled_store_reports_both_rss(capsys, tmp_path, monkeypatch):
    cached = prefill.cached_store
    monkeypatch.setattr(prefill, "cached_store", lambda plan: cached(plan, tmp_path / "cache"))
    assert wave.main(["--quick", "--tls", "off", "--prefill-finished", "500"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| off")]
    # the wave table and the RSS table: a row for the empty store and one for the prefilled
    assert any("500 finished stored" in r for r in rows)
    assert any(r.split("|")[2].strip() == "500" for r in rows)
    assert any(r.split("|")[2].strip() == "0" for r in rows)
    assert f"bar: control plane < {memory.WAVE_CP_BAR_MB:g} MB RSS through the wave" in out
