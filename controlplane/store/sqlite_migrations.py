"""SQLite's SQL for migrations (mixed into :class:`~controlplane.store.sqlite.SqliteStore`)."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from controlplane.migrations.records import MigrationRecord, MigrationState
from controlplane.store import migration_rows as mrows
from controlplane.store.migration_base import MigrationStore
from controlplane.store.rows import Codec
from controlplane.store.sqlite_thread import StoreThread
from protocol.errors import NotFound


class SqliteMigrations(MigrationStore):
    _thread: StoreThread
    _codec: Codec

    async def create_migrations(
        self, records: Sequence[MigrationRecord]
    ) -> list[tuple[MigrationRecord, bool]]:
        batch = list(records)
        return await self._thread.batched(
            functools.partial(self._insert_migrations, batch), lambda result: result
        )

    def _insert_migrations(
        self, records: list[MigrationRecord]
    ) -> list[tuple[MigrationRecord, bool]]:
        conn = self._thread.db
        results = []
        for index, record in enumerate(records):
            cursor = conn.execute(mrows.insert_sql(self._codec), mrows.values(record, self._codec))
            created = cursor.rowcount == 1
            stored = self._load_migration(record.migration_id)
            if not created:
                mrows.check_resubmission(f"specs[{index}].migration_id", record, stored.fingerprint)
            results.append((stored, created))
        return results

    async def get_migration(self, migration_id: str) -> MigrationRecord:
        return await self._thread.run(self._load_migration, migration_id)

    def _load_migration(self, migration_id: str) -> MigrationRecord:
        row = self._thread.db.execute(
            mrows.select_sql(self._codec, "WHERE migration_id = ?"), (migration_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"migration {migration_id} not found")
        return mrows.record_of(row, self._codec)

    async def list_migrations(
        self,
        states: Collection[MigrationState] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[MigrationRecord]:
        return await self._thread.run(self._list_migrations, tuple(states or ()), limit, offset)

    def _list_migrations(
        self, states: tuple[MigrationState, ...], limit: int | None, offset: int
    ) -> list[MigrationRecord]:
        params: list[Any] = [s.value for s in states]
        if limit is not None:
            params += [limit, offset]
        where = mrows.list_where(self._codec, len(states), limit is not None)
        rows = self._thread.db.execute(mrows.select_sql(self._codec, where), params).fetchall()
        return [mrows.record_of(row, self._codec) for row in rows]

    async def save_migration(self, record: MigrationRecord) -> MigrationRecord:
        return await self._thread.batched(
            functools.partial(self._save_migration, record), lambda result: result
        )

    def _save_migration(self, record: MigrationRecord) -> MigrationRecord:
        cursor = self._thread.db.execute(
            mrows.update_sql(self._codec), mrows.update_values(record, self._codec)
        )
        if cursor.rowcount != 1:
            raise NotFound(f"migration {record.migration_id} not found")
        return self._load_migration(record.migration_id)

    async def request_migration_cancel(self, migration_id: str, now: datetime) -> MigrationRecord:
        return await self._thread.batched(
            functools.partial(self._request_cancel, migration_id, now), lambda result: result
        )

    def _request_cancel(self, migration_id: str, now: datetime) -> MigrationRecord:
        self._thread.db.execute(
            mrows.cancel_sql(self._codec),
            (self._codec.encode_flag(True), self._codec.encode_time(now), migration_id),
        )
        return self._load_migration(migration_id)
