"""What the state-store tests share: the PostgreSQL they run against and a record with every
field set."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from credbroker.domain import RotationPhase, RotationRecord

POSTGRES_DSN = os.environ.get(
    "CREDBROKER_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
T0 = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)


def full_record(name: str = "service") -> RotationRecord:
    return RotationRecord(
        credential=name,
        phase=RotationPhase.STORED,
        current_key_id="NEWKEY0000000000001",
        current_key_since=T0,
        old_key_id="OLDKEY0000000000001",
        new_key_id="NEWKEY0000000000001",
        old_version=7,
        new_version=8,
        started_at=T0 - timedelta(seconds=3),
        stored_at=T0,
        finished_at=None,
        last_success_at=T0 - timedelta(days=30),
        last_error="object store admin: HTTP 503 [object_store_unavailable]",
        attempts=2,
        next_due_at=T0 + timedelta(hours=1),
        schedule_fingerprint="0123456789abcdef",
        updated_at=T0,
    )
