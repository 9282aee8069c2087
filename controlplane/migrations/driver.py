"""The migration driver: advances every unfinished migration, stage by stage, from its jobs.

Each pass reads the migrations that are QUEUED or RUNNING and, for each, the jobs it owns, and
does the next thing (:mod:`.plan` has the jobs): start it when its source is under its
in-flight limit; make the disk jobs (the first one anywhere, the rest pinned to the agent that
took it); repair the guest once the data disks are written; publish; on a failure or a cancel,
cancel the running siblings, remove the staged outputs and end FAILED or CANCELLED with the
disk named. Everything it decides from is stored, so a restart or a failover to another replica
continues where the last pass stopped; only the replica holding the scheduler role drives.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime

from controlplane.dispatch.handles import JobControl
from controlplane.job_cancel import cancel_job
from controlplane.migrations import plan, report
from controlplane.migrations.jobs import jobs_of
from controlplane.migrations.plan import DiskStep
from controlplane.migrations.records import (
    MigrationRecord,
    MigrationState,
    MigrationTransition,
    Stage,
    check_migration_transition,
)
from controlplane.migrations.status import first_failure, job_error
from controlplane.models import JobRecord
from controlplane.store import JobStore
from protocol.conversion import utcnow
from protocol.errors import Unavailable
from protocol.spec import JobSpec
from protocol.states import JobState

log = logging.getLogger(__name__)

UNFINISHED = (MigrationState.QUEUED, MigrationState.RUNNING)


def moved(
    record: MigrationRecord, to_state: MigrationState, reason: str, now: datetime, stage: Stage
) -> MigrationRecord:
    """``record`` in ``to_state`` with the transition in its history."""
    check_migration_transition(record.state, to_state)
    step = MigrationTransition(record.state, to_state, now, reason)
    return dataclasses.replace(
        record,
        state=to_state,
        stage=stage,
        reason=reason if to_state.is_terminal or to_state is MigrationState.QUEUED else "",
        updated_at=now,
        finished_at=now if to_state.is_terminal else None,
        history=(*record.history, step),
    )


class MigrationDriver:
    """Runs passes over the unfinished migrations, on a tick and when woken."""

    def __init__(
        self,
        store: JobStore,
        control: JobControl,
        leads: Callable[[], Awaitable[bool]],
        tick_seconds: float = 1.0,
    ) -> None:
        self._store = store
        self._control = control
        self._leads = leads
        self._tick = tick_seconds
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wakeup.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="h2k-migrations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._tick)
            self._wakeup.clear()
            try:
                if await self._leads():
                    await self.advance_all()
            except Unavailable as exc:
                log.warning("store unavailable: migrations wait error=%s", exc.message)
            except Exception:
                log.exception("migration pass failed")

    async def advance_all(self) -> None:
        """One pass over every QUEUED or RUNNING migration, oldest first."""
        unfinished = await self._store.list_migrations(states=UNFINISHED)
        in_flight = Counter(m.source_key for m in unfinished if m.state is MigrationState.RUNNING)
        for record in unfinished:
            try:
                await self._advance(record, in_flight)
            except Unavailable:
                raise
            except Exception:
                log.exception("advancing migration failed migration_id=%s", record.migration_id)

    async def _save(self, record: MigrationRecord) -> MigrationRecord:
        saved = await self._store.save_migration(record)
        log.info(
            "migration migration_id=%s state=%s stage=%s reason=%r",
            saved.migration_id,
            saved.state,
            saved.stage,
            saved.reason,
        )
        return saved

    async def _create(self, *specs: JobSpec) -> None:
        await self._store.create_jobs(specs, utcnow())
        self._control.wake()

    async def _advance(self, record: MigrationRecord, in_flight: Counter[str]) -> None:
        now = utcnow()
        if record.state is MigrationState.QUEUED:
            started = await self._start(record, in_flight, now)
            if started is None:
                return
            record = started
        jobs = await jobs_of(self._store, record)
        steps = plan.disk_steps(record.spec)
        if record.stage is not Stage.CLEANUP:
            failure = first_failure(steps, jobs)
            if record.cancel_requested or failure:
                reason = "cancelled on request" if record.cancel_requested else str(failure)
                await self._cancel_siblings(record, jobs, reason)
                record = await self._save(
                    dataclasses.replace(record, stage=Stage.CLEANUP, reason=reason, updated_at=now)
                )
        if record.stage is Stage.CLEANUP:
            await self._clean_up(record, jobs, steps, now)
            return
        await self._next_stage(record, jobs, steps, now)

    async def _start(
        self, record: MigrationRecord, in_flight: Counter[str], now: datetime
    ) -> MigrationRecord | None:
        if record.cancel_requested:
            await self._save(
                moved(
                    record, MigrationState.CANCELLED, "cancelled before it started", now, Stage.DONE
                )
            )
            return None
        limit = record.spec.max_in_flight_per_source
        if limit and in_flight[record.source_key] >= limit:
            reason = (
                f"waiting: {in_flight[record.source_key]} migrations of source "
                f"{record.source_key} in flight (max_in_flight_per_source {limit})"
            )
            if record.reason != reason:
                await self._save(dataclasses.replace(record, reason=reason, updated_at=now))
            return None
        in_flight[record.source_key] += 1
        return await self._save(moved(record, MigrationState.RUNNING, "started", now, Stage.DISKS))

    async def _next_stage(
        self,
        record: MigrationRecord,
        jobs: dict[str, JobRecord],
        steps: list[DiskStep],
        now: datetime,
    ) -> None:
        spec = record.spec
        converts = [s for s in steps if s.role == "convert"]
        repair = next((s for s in steps if s.role == "repair"), None)
        lead = converts[0] if converts else repair
        if lead is None:  # a dry run that repairs nothing
            await self._save(
                moved(record, MigrationState.COMPLETED, "dry run: nothing to do", now, Stage.DONE)
            )
            return
        if lead.job_id not in jobs:
            await self._create(plan.disk_job(spec, lead, None))
            return
        pin = jobs[lead.job_id].assigned_agent
        if pin is None:
            return  # the first job is not placed yet: the others follow it
        if record.stage is Stage.DISKS:
            missing = [s for s in converts if s.job_id not in jobs]
            if missing:
                await self._create(*(plan.disk_job(spec, s, pin) for s in missing))
                return
            if not all(jobs[s.job_id].state is JobState.COMPLETED for s in converts):
                return
            if repair is not None:
                if repair.job_id not in jobs:
                    await self._create(plan.disk_job(spec, repair, pin))
                await self._save(dataclasses.replace(record, stage=Stage.REPAIR, updated_at=now))
                return
            record = await self._save(
                dataclasses.replace(record, stage=Stage.PUBLISH, updated_at=now)
            )
        if record.stage is Stage.REPAIR:
            assert repair is not None
            if jobs[repair.job_id].state is not JobState.COMPLETED:
                return
            if spec.dry_run:
                reason = "dry run: the repair reported what it would change; nothing written"
                await self._save(moved(record, MigrationState.COMPLETED, reason, now, Stage.DONE))
                return
            record = await self._save(
                dataclasses.replace(record, stage=Stage.PUBLISH, updated_at=now)
            )
        publish = jobs.get(plan.publish_job_id(spec.migration_id))
        if publish is None:
            await self._create(plan.publish_job(spec, report.documents(record, jobs), pin))
            return
        if publish.state is JobState.COMPLETED:
            done = dataclasses.replace(record, outputs=tuple(plan.final_paths(spec)))
            reason = "every disk written, checked and published"
            await self._save(moved(done, MigrationState.COMPLETED, reason, now, Stage.DONE))

    async def _cancel_siblings(
        self, record: MigrationRecord, jobs: dict[str, JobRecord], reason: str
    ) -> None:
        for job in jobs.values():
            if not job.state.is_terminal:
                await cancel_job(self._store, self._control, job, f"migration ends: {reason}")

    async def _clean_up(
        self,
        record: MigrationRecord,
        jobs: dict[str, JobRecord],
        steps: list[DiskStep],
        now: datetime,
    ) -> None:
        spec = record.spec
        cleanup_id = plan.cleanup_job_id(spec.migration_id)
        if any(not j.state.is_terminal for jid, j in jobs.items() if jid != cleanup_id):
            return  # the siblings are being cancelled
        final = MigrationState.CANCELLED if record.cancel_requested else MigrationState.FAILED
        reason = record.reason
        if not spec.keep_partial_outputs and not spec.dry_run:
            cleanup = jobs.get(cleanup_id)
            if cleanup is None:
                # Where the outputs were written (every job of a migration runs on one agent).
                pin = next((j.assigned_agent for j in jobs.values() if j.assigned_agent), None)
                await self._create(plan.cleanup_job(spec, pin))
                return
            if not cleanup.state.is_terminal:
                return
            if cleanup.state is not JobState.COMPLETED:
                reason += f"; removing the staged outputs failed: {job_error(cleanup)}"
        elif spec.keep_partial_outputs:
            reason += "; staged outputs kept (keep_partial_outputs)"
        await self._save(moved(record, final, reason, now, Stage.DONE))
