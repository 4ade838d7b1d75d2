"""The one mapping between the control plane's records (principals, token hashes, freezes)
and table rows, shared by the SQLite and PostgreSQL adapters. Roles and spaces are JSON arrays
(sorted) in a text column; times are timezone-aware datetimes here (ISO text in SQLite)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from credbroker.domain import Access, Client, Freeze, Principal, Role, TokenRecord

PRINCIPAL_COLUMNS = (
    "id",
    "roles",
    "spaces",
    "max_access",
    "max_ttl_seconds",
    "rate_per_second",
    "burst",
    "created_at",
    "updated_at",
    "revoked_at",
    "created_by",
)
TOKEN_COLUMNS = (
    "id",
    "client_id",
    "sha256",
    "created_at",
    "expires_at",
    "revoked_at",
    "created_by",
)
FREEZE_COLUMNS = (
    "id",
    "space",
    "client_id",
    "reason",
    "created_at",
    "created_by",
    "lifted_at",
    "lifted_by",
)
TIME_COLUMNS = frozenset({"created_at", "updated_at", "revoked_at", "expires_at", "lifted_at"})


def principal_row(p: Principal) -> dict[str, Any]:
    c = p.client
    return {
        "id": c.id,
        "roles": json.dumps(sorted(r.value for r in c.roles)),
        "spaces": json.dumps(sorted(c.spaces)),
        "max_access": c.max_access.value,
        "max_ttl_seconds": c.max_ttl_seconds,
        "rate_per_second": p.rate_per_second,
        "burst": p.burst,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "revoked_at": p.revoked_at,
        "created_by": p.created_by,
    }


def principal_from(row: Mapping[str, Any]) -> Principal:
    return Principal(
        client=Client(
            id=row["id"],
            spaces=frozenset(json.loads(row["spaces"])),
            max_access=Access(row["max_access"]),
            max_ttl_seconds=int(row["max_ttl_seconds"]),
            roles=frozenset(Role(r) for r in json.loads(row["roles"])),
        ),
        rate_per_second=None if row["rate_per_second"] is None else float(row["rate_per_second"]),
        burst=None if row["burst"] is None else int(row["burst"]),
        created_at=aware(row["created_at"]),
        updated_at=aware(row["updated_at"]),
        revoked_at=aware(row["revoked_at"]),
        created_by=row["created_by"],
    )


def token_row(t: TokenRecord) -> dict[str, Any]:
    return {name: getattr(t, name) for name in TOKEN_COLUMNS}


def token_from(row: Mapping[str, Any]) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        client_id=row["client_id"],
        sha256=row["sha256"],
        created_at=_required(row["created_at"]),
        expires_at=aware(row["expires_at"]),
        revoked_at=aware(row["revoked_at"]),
        created_by=row["created_by"],
    )


def freeze_row(f: Freeze) -> dict[str, Any]:
    return {name: getattr(f, name) for name in FREEZE_COLUMNS}


def freeze_from(row: Mapping[str, Any]) -> Freeze:
    return Freeze(
        id=row["id"],
        space=row["space"],
        client_id=row["client_id"],
        reason=row["reason"],
        created_at=_required(row["created_at"]),
        created_by=row["created_by"],
        lifted_at=aware(row["lifted_at"]),
        lifted_by=row["lifted_by"],
    )


def as_text(row: dict[str, Any]) -> dict[str, Any]:
    """SQLite: times as ISO 8601 text."""
    return {
        k: (v.isoformat() if k in TIME_COLUMNS and v is not None else v) for k, v in row.items()
    }


def aware(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _required(value: datetime | str | None) -> datetime:
    moment = aware(value)
    if moment is None:
        raise ValueError("a required time is missing")
    return moment
