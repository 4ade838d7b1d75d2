"""The one mapping between a RotationRecord and a table row, shared by both adapters.

The columns are listed here, not derived from the dataclass: the tables are made by frozen
migrations (state/migrations.py), so a new RotationRecord field needs a column here and a new
migration in each store that adds it, with a default equal to the field's default (old rows
then read as they did). tests/contract/test_state_migrations.py fails until all three agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from credbroker.domain import RotationPhase, RotationRecord

COLUMNS: tuple[str, ...] = (
    "credential",
    "phase",
    "current_key_id",
    "current_key_since",
    "old_key_id",
    "new_key_id",
    "old_version",
    "new_version",
    "started_at",
    "stored_at",
    "finished_at",
    "last_success_at",
    "last_error",
    "attempts",
    "next_due_at",
    "schedule_fingerprint",
    "updated_at",
)
# Every datetime field: timezone-aware in the record; timestamptz in PostgreSQL, ISO text in
# SQLite.
TIME_COLUMNS = frozenset(
    {
        "current_key_since",
        "started_at",
        "stored_at",
        "finished_at",
        "last_success_at",
        "next_due_at",
        "updated_at",
    }
)
INT_COLUMNS = frozenset({"old_version", "new_version", "attempts"})


def to_row(record: RotationRecord) -> dict[str, Any]:
    row: dict[str, Any] = {name: getattr(record, name) for name in COLUMNS}
    row["phase"] = record.phase.value
    for name in TIME_COLUMNS:
        value = row[name]
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware")
    return row


def from_row(row: Mapping[str, Any]) -> RotationRecord:
    values = {name: row[name] for name in COLUMNS}
    values["phase"] = RotationPhase(values["phase"])
    for name in TIME_COLUMNS:
        values[name] = _aware(values[name])
    return RotationRecord(**values)


def _aware(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
