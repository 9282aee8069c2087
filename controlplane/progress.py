"""Recording what an agent reports: store the event, move the job's state, fan it out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from controlplane.events import EventHub
from controlplane.models import JobRecord, result_to_dict
from controlplane.store import JobStore
from protocol.conversion import event_state, timestamp_from_proto, utcnow
from protocol.gen.h2k.v1 import job_pb2
from protocol.states import IllegalTransition, JobState, is_allowed

log = logging.getLogger(__name__)


class ProgressRecorder:
    """Applies agents' progress events to the store, then publishes them to watchers."""

    def __init__(
        self, store: JobStore, hub: EventHub, on_terminal: Callable[[str], None] | None = None
    ) -> None:
        self._store = store
        self._hub = hub
        self._on_terminal = on_terminal

    async def record(self, event: job_pb2.ProgressEvent) -> JobRecord:
        """Store one event and apply it; returns the job as it is afterwards.

        Events at or below the job's last_seq were applied already and are skipped (an
        AttachJob replay repeats them). Events for a job that is already terminal are dropped.
        """
        job = await self._store.get_job(event.job_id)
        if job.state.is_terminal or event.seq <= job.last_seq:
            return job
        # A duplicate insert is harmless: the state may still need applying after a crash
        # between storing the event and moving the job.
        await self._store.append_event(event)
        job = await self._advance(job, event)
        self._hub.publish(event)
        if job.state.is_terminal:
            self.announce_terminal(job)
        return job

    def announce_terminal(self, job: JobRecord) -> None:
        """Tell watchers and the dispatcher that a job ended (after the store recorded it)."""
        log.info(
            "job finished job_id=%s state=%s agent=%s attempt=%d",
            job.job_id,
            job.state,
            job.assigned_agent,
            job.attempt,
        )
        self._hub.notify_terminal(job.job_id)
        if self._on_terminal is not None:
            self._on_terminal(job.job_id)

    async def _advance(self, job: JobRecord, event: job_pb2.ProgressEvent) -> JobRecord:
        target = event_state(event)
        when = timestamp_from_proto(event.time) if event.HasField("time") else utcnow()
        updates: dict[str, Any] = {
            "last_seq": event.seq,
            "phase": event.phase or job.phase,
            "progress_percent": event.progress_percent,
        }
        if target is None or (target is job.state and target is not JobState.PROGRESSING):
            return await self._store.update_job(job.job_id, **updates)
        if target.is_terminal:
            result = result_to_dict(event.result) if event.HasField("result") else None
            updates.update(result=result, error=event.result.error.message or None)
            updates["finished_at"] = when
        reason = _reason(event, target)
        if job.state is JobState.ASSIGNED and target is not JobState.RUNNING:
            # The agent's first event is RUNNING; if a replay skipped it, pass through RUNNING
            # so the history stays a legal path.
            if is_allowed(JobState.RUNNING, target):
                await self._store.transition(
                    job.job_id, JobState.RUNNING, f"started on agent {event.agent}", started_at=when
                )
        elif target is JobState.RUNNING:
            updates["started_at"] = when
        try:
            return await self._store.transition(job.job_id, target, reason, **updates)
        except IllegalTransition as exc:
            log.warning("event state ignored job_id=%s seq=%d error=%s", job.job_id, event.seq, exc)
            return await self._store.update_job(job.job_id, **updates)


def _reason(event: job_pb2.ProgressEvent, target: JobState) -> str:
    """The history reason of the transition an event causes."""
    agent = event.agent or "?"
    error = event.result.error
    if target is JobState.RUNNING:
        return f"started on agent {agent}"
    if target is JobState.PROGRESSING:
        return event.phase or "progressing"
    if target is JobState.COMPLETED:
        return f"completed on agent {agent}"
    if error.message:
        code = f"{error.code}: " if error.code else ""
        return f"{code}{error.message}"
    return f"{target.value.lower()} on agent {agent}"
