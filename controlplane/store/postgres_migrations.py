"""PostgreSQL's SQL for migrations (mixed into the PostgreSQL store)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from controlplane.migrations.records import MigrationRecord, MigrationState
from controlplane.store import migration_rows as mrows
from controlplane.store.migration_base import MigrationStore
from controlplane.store.postgres_pool import Connections
from controlplane.store.rows import Codec
from protocol.errors import NotFound

CODEC = Codec()


async def _load(conn: Any, migration_id: str) -> MigrationRecord:
    cursor = await conn.execute(mrows.select_sql(CODEC, "WHERE migration_id = %s"), (migration_id,))
    row = await cursor.fetchone()
    if row is None:
        raise NotFound(f"migration {migration_id} not found")
    return mrows.record_of(row, CODEC)


class PostgresMigrations(MigrationStore):
    _db: Connections

    async def create_migrations(
        self, records: Sequence[MigrationRecord]
    ) -> list[tuple[MigrationRecord, bool]]:
        results = []
        async with self._db.transaction() as conn:
            for index, record in enumerate(records):
                cursor = await conn.execute(
                    mrows.insert_sql(CODEC) + " RETURNING migration_id",
                    mrows.values(record, CODEC),
                )
                created = await cursor.fetchone() is not None
                stored = await _load(conn, record.migration_id)
                if not created:
                    mrows.check_resubmission(
                        f"specs[{index}].migration_id", record, stored.fingerprint
                    )
                results.append((stored, created))
        return results

    async def get_migration(self, migration_id: str) -> MigrationRecord:
        async with self._db.connection() as conn:
            return await _load(conn, migration_id)

    async def list_migrations(
        self,
        states: Collection[MigrationState] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[MigrationRecord]:
        wanted = tuple(states or ())
        params: list[Any] = [s.value for s in wanted]
        if limit is not None:
            params += [limit, offset]
        where = mrows.list_where(CODEC, len(wanted), limit is not None)
        async with self._db.connection() as conn:
            cursor = await conn.execute(mrows.select_sql(CODEC, where), params)
            return [mrows.record_of(row, CODEC) for row in await cursor.fetchall()]

    async def save_migration(self, record: MigrationRecord) -> MigrationRecord:
        async with self._db.transaction() as conn:
            cursor = await conn.execute(mrows.update_sql(CODEC), mrows.update_values(record, CODEC))
            if cursor.rowcount != 1:
                raise NotFound(f"migration {record.migration_id} not found")
            return await _load(conn, record.migration_id)

    async def request_migration_cancel(self, migration_id: str, now: datetime) -> MigrationRecord:
        async with self._db.transaction() as conn:
            await conn.execute(mrows.cancel_sql(CODEC), (True, now, migration_id))
            return await _load(conn, migration_id)
