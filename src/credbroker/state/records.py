"""The one mapping between a RotationRecord and a table row, shared by both adapters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from credbroker.domain import RotationPhase, RotationRecord

COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RotationRecord))
TIME_COLUMNS = frozenset(
    name
    for name in COLUMNS
    if name.endswith("_at") or name.endswith("_since")  # every datetime field
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
