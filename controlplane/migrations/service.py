"""The MigrationService servicer: submit (one or a wave), get, list, cancel."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from controlplane.auth import Role, current_principal
from controlplane.migrations.intake import checked_spec
from controlplane.migrations.jobs import jobs_of
from controlplane.migrations.records import (
    MigrationRecord,
    MigrationState,
    MigrationTransition,
    Stage,
    spec_fingerprint,
)
from controlplane.migrations.status import job_views, progress
from controlplane.models import JobRecord
from controlplane.store import JobStore
from protocol.conversion import utcnow
from protocol.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from protocol.gen.h2k.v1 import migration_pb2, migration_pb2_grpc
from runtime.status import Context, unary_rpc

log = logging.getLogger(__name__)

MAX_WAVE = 500
MAX_PAGE = 1000


def to_proto(record: MigrationRecord, jobs: Mapping[str, JobRecord]) -> migration_pb2.Migration:
    done = progress(record, jobs, utcnow())
    msg = migration_pb2.Migration(
        spec=record.spec,
        state=record.state.to_proto(),
        jobs=job_views(record, jobs),
        stage=record.stage.value,
        reason=record.reason,
        bytes_done=done.bytes_done,
        bytes_total=done.bytes_total,
        disks_done=done.disks_done,
        disks_total=done.disks_total,
        cancel_requested=record.cancel_requested,
        outputs=list(record.outputs),
        eta_seconds=done.eta_seconds,
    )
    for t in record.history:
        step = msg.history.add(to_state=t.to_state.to_proto(), reason=t.reason)
        if t.from_state is not None:
            step.from_state = t.from_state.to_proto()
        step.time.FromDatetime(t.time)
    msg.submitted_at.FromDatetime(record.submitted_at)
    msg.updated_at.FromDatetime(record.updated_at)
    if record.finished_at is not None:
        msg.finished_at.FromDatetime(record.finished_at)
    return msg


def new_record(spec: migration_pb2.MigrationSpec) -> MigrationRecord:
    now = utcnow()
    return MigrationRecord(
        migration_id=spec.migration_id,
        spec=spec,
        fingerprint=spec_fingerprint(spec),
        state=MigrationState.QUEUED,
        stage=Stage.WAITING,
        submitted_at=now,
        updated_at=now,
        source_key=spec.source_key,
        history=(MigrationTransition(None, MigrationState.QUEUED, now, "submitted"),),
    )


class MigrationService(migration_pb2_grpc.MigrationServiceServicer):
    """Migrations for h2kctl, the HyperSDK intake and other services."""

    def __init__(self, store: JobStore, wake: Callable[[], None]) -> None:
        self._store = store
        self._wake = wake

    async def _submit(
        self, specs: list[migration_pb2.MigrationSpec], wave: bool
    ) -> list[migration_pb2.SubmitMigrationResponse]:
        principal = current_principal()
        problems = []
        checked = []
        seen: set[str] = set()
        for index, spec in enumerate(specs):
            prefix = f"specs[{index}]." if wave else "spec."
            if spec.migration_id in seen:
                problems.append(f"{prefix}migration_id: {spec.migration_id!r} appears twice")
            seen.add(spec.migration_id)
            try:
                checked.append(checked_spec(spec, principal.name, prefix))
            except InvalidArgument as exc:
                problems.append(exc.message)
        if problems:
            raise InvalidArgument("; ".join(problems))
        stored = await self._store.create_migrations([new_record(s) for s in checked])
        self._wake()
        answers = []
        for record, created in stored:
            if created:
                log.info(
                    "migration submitted migration_id=%s vm=%s disks=%d source=%s",
                    record.migration_id,
                    record.spec.vm.name,
                    len(record.spec.vm.disks),
                    record.source_key,
                )
            jobs = await jobs_of(self._store, record)
            answers.append(
                migration_pb2.SubmitMigrationResponse(
                    migration=to_proto(record, jobs), created=created
                )
            )
        return answers

    @unary_rpc
    async def SubmitMigration(
        self, request: migration_pb2.SubmitMigrationRequest, context: Context
    ) -> migration_pb2.SubmitMigrationResponse:
        (answer,) = await self._submit([request.spec], wave=False)
        return answer

    @unary_rpc
    async def SubmitMigrations(
        self, request: migration_pb2.SubmitMigrationsRequest, context: Context
    ) -> migration_pb2.SubmitMigrationsResponse:
        if not 1 <= len(request.specs) <= MAX_WAVE:
            raise InvalidArgument(f"specs: must hold 1 to {MAX_WAVE} migrations")
        results = await self._submit(list(request.specs), wave=True)
        return migration_pb2.SubmitMigrationsResponse(results=results)

    @unary_rpc
    async def GetMigration(
        self, request: migration_pb2.GetMigrationRequest, context: Context
    ) -> migration_pb2.Migration:
        record = await self._store.get_migration(request.migration_id)
        return to_proto(record, await jobs_of(self._store, record))

    @unary_rpc
    async def ListMigrations(
        self, request: migration_pb2.ListMigrationsRequest, context: Context
    ) -> migration_pb2.ListMigrationsResponse:
        size = request.page_size or 100
        if not 1 <= size <= MAX_PAGE:
            raise InvalidArgument(f"page_size: must be between 1 and {MAX_PAGE}")
        try:
            offset = int(request.page_token or "0")
            states = [MigrationState.from_proto(s) for s in request.states]
        except ValueError:
            raise InvalidArgument("page_token or states: not valid") from None
        records = await self._store.list_migrations(states=states, limit=size + 1, offset=offset)
        page = records[:size]
        token = str(offset + size) if len(records) > size else ""
        migrations = [to_proto(r, await jobs_of(self._store, r)) for r in page]
        return migration_pb2.ListMigrationsResponse(migrations=migrations, next_page_token=token)

    @unary_rpc
    async def CancelMigration(
        self, request: migration_pb2.CancelMigrationRequest, context: Context
    ) -> migration_pb2.Migration:
        record = await self._store.get_migration(request.migration_id)
        principal = current_principal()
        if not principal.has(Role.ADMIN) and record.spec.audit.requested_by != principal.name:
            raise PermissionDenied(
                f"MigrationService/CancelMigration of {record.migration_id} (submitted by "
                f"{record.spec.audit.requested_by}) needs role admin"
            )
        if record.state.is_terminal:
            raise FailedPrecondition(
                f"migration {record.migration_id} is already {record.state.value}"
            )
        record = await self._store.request_migration_cancel(record.migration_id, utcnow())
        log.info("migration cancel requested migration_id=%s", record.migration_id)
        self._wake()
        return to_proto(record, await jobs_of(self._store, record))
