"""The migrations part of the store interface (both backends implement it)."""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from datetime import datetime

from controlplane.migrations.records import MigrationRecord, MigrationState


class MigrationStore(abc.ABC):
    """Durable VM migrations; their jobs live in the job tables."""

    @abc.abstractmethod
    async def create_migrations(
        self, records: Sequence[MigrationRecord]
    ) -> list[tuple[MigrationRecord, bool]]:
        """Store new migrations (distinct ids), all or none, committed before returning.

        Returns:
            Per record: the stored one and True, or the existing one and False when a
            migration with the same id and fingerprint exists.

        Raises:
            AlreadyExists: naming ``specs[i].migration_id`` when one exists with another spec.
        """

    @abc.abstractmethod
    async def get_migration(self, migration_id: str) -> MigrationRecord:
        """Raises NotFound."""

    @abc.abstractmethod
    async def list_migrations(
        self,
        states: Collection[MigrationState] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[MigrationRecord]:
        """Migrations in submission order, optionally only in ``states``."""

    @abc.abstractmethod
    async def save_migration(self, record: MigrationRecord) -> MigrationRecord:
        """Write back state, stage, reason, history, outputs and times (not the spec, not
        cancel_requested). Raises NotFound."""

    @abc.abstractmethod
    async def request_migration_cancel(self, migration_id: str, now: datetime) -> MigrationRecord:
        """Set cancel_requested (idempotent). Raises NotFound."""
