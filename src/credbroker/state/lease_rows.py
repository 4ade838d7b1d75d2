"""The one mapping between leases / revocations and table rows, shared by both adapters."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from credbroker.leases import Lease, Revocation, Selector

LEASE_COLUMNS: tuple[str, ...] = (
    "lease_id",
    "kind",
    "client",
    "space",
    "bucket",
    "prefix",
    "access",
    "ttl_seconds",
    "issued_at",
    "expires_at",
    "mode",
    "access_key_id",
    "rule",
    "actor",
    "source",
    "object_key",
    "revoked_at",
    "revocation_id",
)
LEASE_TIMES = frozenset({"issued_at", "expires_at", "revoked_at"})

REVOCATION_COLUMNS: tuple[str, ...] = (
    "revocation_id",
    "selector",
    "value",
    "created_at",
    "created_by",
    "reason",
    "lease_count",
    "enforce_until",
    "object_store_enforced",
    "detail",
    "issued_before",
)
REVOCATION_TIMES = frozenset({"created_at", "enforce_until", "issued_before"})


def lease_row(lease: Lease) -> dict[str, Any]:
    row = {name: getattr(lease, name) for name in LEASE_COLUMNS}
    _check_aware(row, LEASE_TIMES)
    return row


def lease_from_row(row: Mapping[str, Any]) -> Lease:
    values = {name: row[name] for name in LEASE_COLUMNS}
    for name in LEASE_TIMES:
        values[name] = aware(values[name])
    values["ttl_seconds"] = int(values["ttl_seconds"])
    return Lease(**values)


def revocation_row(revocation: Revocation) -> dict[str, Any]:
    row = {name: getattr(revocation, name) for name in REVOCATION_COLUMNS}
    row["selector"] = revocation.selector.value
    _check_aware(row, REVOCATION_TIMES)
    return row


def revocation_from_row(row: Mapping[str, Any]) -> Revocation:
    values = {name: row[name] for name in REVOCATION_COLUMNS}
    values["selector"] = Selector(values["selector"])
    values["object_store_enforced"] = bool(values["object_store_enforced"])
    values["lease_count"] = int(values["lease_count"])
    for name in REVOCATION_TIMES:
        values[name] = aware(values[name])
    return Revocation(**values)


def sortable(moment: datetime) -> str:
    """SQLite keeps times as text: one fixed-width UTC form, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def aware(value: datetime | str | None) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _check_aware(row: Mapping[str, Any], names: frozenset[str]) -> None:
    for name in names:
        value = row[name]
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware")
