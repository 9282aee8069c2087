"""Migrations as rows: the columns, the statements and row -> record mapping, for both backends.

Pure; the backend's :class:`~controlplane.store.rows.Codec` converts times, flags and marks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf import json_format

from controlplane.migrations.records import (
    MigrationRecord,
    MigrationState,
    MigrationTransition,
    Stage,
)
from controlplane.store.rows import Codec
from protocol.errors import AlreadyExists
from protocol.gen.h2k.v1 import migration_pb2

COLUMNS = (
    "migration_id",
    "spec",
    "fingerprint",
    "state",
    "stage",
    "source_key",
    "reason",
    "cancel_requested",
    "history",
    "outputs",
    "submitted_at",
    "updated_at",
    "finished_at",
)


def insert_sql(codec: Codec) -> str:
    """Insert a new migration; an existing id inserts nothing (ON CONFLICT DO NOTHING)."""
    return (
        f"INSERT INTO migrations ({', '.join(COLUMNS)}) VALUES ({codec.marks(len(COLUMNS))}) "
        "ON CONFLICT (migration_id) DO NOTHING"
    )


def select_sql(codec: Codec, where: str = "") -> str:
    return f"SELECT {', '.join(COLUMNS)} FROM migrations {where}"


def _history_json(history: tuple[MigrationTransition, ...]) -> str:
    return json.dumps(
        [
            {
                "from": t.from_state.value if t.from_state else None,
                "to": t.to_state.value,
                "time": t.time.isoformat(),
                "reason": t.reason,
            }
            for t in history
        ]
    )


def _history(text: str) -> tuple[MigrationTransition, ...]:
    return tuple(
        MigrationTransition(
            from_state=MigrationState(item["from"]) if item["from"] else None,
            to_state=MigrationState(item["to"]),
            time=datetime.fromisoformat(item["time"]),
            reason=item["reason"],
        )
        for item in json.loads(text)
    )


def values(record: MigrationRecord, codec: Codec) -> tuple[Any, ...]:
    """The row of ``record`` in COLUMNS order."""
    return (
        record.migration_id,
        json_format.MessageToJson(record.spec, indent=None, sort_keys=True),
        record.fingerprint,
        record.state.value,
        record.stage.value,
        record.source_key,
        record.reason,
        codec.encode_flag(record.cancel_requested),
        _history_json(record.history),
        json.dumps(list(record.outputs)),
        codec.encode_time(record.submitted_at),
        codec.encode_time(record.updated_at),
        codec.optional_time(record.finished_at),
    )


def update_sql(codec: Codec) -> str:
    """Write back every changeable column of one migration."""
    # Not cancel_requested: any replica sets it (cancel_sql); the driver never clears it.
    names = ("state", "stage", "reason", "history", "outputs")
    sets = ", ".join(f"{name} = {codec.mark}" for name in (*names, "updated_at", "finished_at"))
    return f"UPDATE migrations SET {sets} WHERE migration_id = {codec.mark}"


def update_values(record: MigrationRecord, codec: Codec) -> tuple[Any, ...]:
    return (
        record.state.value,
        record.stage.value,
        record.reason,
        _history_json(record.history),
        json.dumps(list(record.outputs)),
        codec.encode_time(record.updated_at),
        codec.optional_time(record.finished_at),
        record.migration_id,
    )


def record_of(row: Mapping[str, Any], codec: Codec) -> MigrationRecord:
    """The record a stored row describes."""
    spec = json_format.Parse(row["spec"], migration_pb2.MigrationSpec())
    return MigrationRecord(
        migration_id=row["migration_id"],
        spec=spec,
        fingerprint=row["fingerprint"],
        state=MigrationState(row["state"]),
        stage=Stage(row["stage"]),
        source_key=row["source_key"],
        reason=row["reason"],
        cancel_requested=codec.decode_flag(row["cancel_requested"]),
        history=_history(row["history"]),
        outputs=tuple(json.loads(row["outputs"])),
        submitted_at=codec.decode_time(row["submitted_at"]),
        updated_at=codec.decode_time(row["updated_at"]),
        finished_at=codec.decoded_time(row["finished_at"]),
    )


def check_resubmission(field: str, record: MigrationRecord, stored_fingerprint: str) -> None:
    """Same id, different spec: ALREADY_EXISTS naming the field."""
    if stored_fingerprint != record.fingerprint:
        raise AlreadyExists(
            f"{field}: migration {record.migration_id} exists with a different spec"
        )


def cancel_sql(codec: Codec) -> str:
    return (
        f"UPDATE migrations SET cancel_requested = {codec.mark}, updated_at = {codec.mark} "
        f"WHERE migration_id = {codec.mark}"
    )


def list_where(codec: Codec, states: int, limit: bool) -> str:
    """WHERE/ORDER/LIMIT of a listing (``states`` marks for the states, none: all)."""
    where = f"WHERE state IN ({codec.marks(states)}) " if states else ""
    page = f" LIMIT {codec.mark} OFFSET {codec.mark}" if limit else ""
    return f"{where}ORDER BY submitted_at, migration_id{page}"
