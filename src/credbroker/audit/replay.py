"""Leases read back from the JSON-lines audit file: what the lease writer reconciles at start
(a crash between a vend's audit record and the batched lease write loses nothing)."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

from credbroker.leases import Lease, lease_from_audit

log = logging.getLogger("credbroker.audit.replay")


def unexpired_leases(path: Path | None, now: datetime) -> list[Lease]:
    """Every lease the audit file at `path` records that has not expired at `now` (the last
    record of a lease id wins). Blocking: run it in a thread."""
    if path is None:
        return []
    found: dict[str, Lease] = {}
    try:
        with path.open("rb") as lines:
            for raw in lines:
                if b'"lease_id"' not in raw:
                    continue
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue  # a torn last line after a crash
                lease = lease_from_audit(event) if isinstance(event, dict) else None
                if lease is not None and lease.expires_at > now:
                    found[lease.lease_id] = lease
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.error("audit file %s not read for lease reconciliation: %s", path, exc.strerror)
        return []
    return list(found.values())
