"""The access report: who got what from the audit records of a period.

- grants: per client, space, access (read/write), event (vend/presign), rule, actor and mode:
  how many times, first and last;
- denials: per client, space and reason code (`denied` records of the vend path and `refused`
  records of the API), how many times;
- degraded: periods served by the read-only fallback (consecutive grants with mode
  "read-only", from the first to the last).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from credbroker.compliance.trail import GRANTS, record_time
from credbroker.domain import utc_text


def access_report(
    records: Iterable[Mapping[str, Any]],
    *,
    start: datetime,
    end: datetime,
    space: str | None,
    client: str | None,
    space_of: Callable[[Mapping[str, Any]], str | None],
) -> dict[str, Any]:
    grants: dict[tuple[str, ...], dict[str, Any]] = {}
    denials: dict[tuple[str, ...], dict[str, Any]] = {}
    degraded: list[dict[str, Any]] = []
    open_period: dict[str, Any] | None = None
    for record in records:
        moment = record_time(record)
        if moment is None or not start <= moment < end:
            continue
        event = record.get("event")
        who = str(record.get("client") or "-")
        where = space_of(record) or "-"
        if client is not None and who != client:
            continue
        if space is not None and where != space:
            continue
        stamp = utc_text(moment)
        if event in GRANTS:
            mode = str(record.get("mode") or "normal")
            key = (
                who,
                where,
                str(record.get("access")),
                str(event),
                str(record.get("rule") or "-"),
                str(record.get("actor") or "-"),
                mode,
            )
            row = grants.setdefault(
                key,
                dict(
                    zip(
                        ("client", "space", "access", "event", "rule", "actor", "mode"),
                        key,
                        strict=True,
                    ),
                    count=0,
                    first=stamp,
                    last=stamp,
                ),
            )
            row["count"] += 1
            row["last"] = stamp
            if mode == "read-only":
                if open_period is None:
                    open_period = {"from": stamp, "to": stamp, "grants": 0}
                    degraded.append(open_period)
                open_period["to"] = stamp
                open_period["grants"] += 1
            else:
                open_period = None
        elif event in ("denied", "refused"):
            reason = str(record.get("code") or "-")
            denial = (who, where, str(event), reason)
            row = denials.setdefault(
                denial,
                {"client": who, "space": where, "event": event, "reason": reason, "count": 0},
            )
            row["count"] += 1
    return {
        "from": utc_text(start),
        "to": utc_text(end),
        "grants": sorted(grants.values(), key=lambda r: (r["client"], r["space"], r["event"])),
        "denials": sorted(denials.values(), key=lambda r: (r["client"], r["reason"])),
        "degraded": degraded,
    }


def as_csv(report: Mapping[str, Any]) -> str:
    """One table: kind (grant, denial, degraded) and the union of the columns."""
    columns = [
        "kind", "client", "space", "access", "event", "rule", "actor", "mode",
        "reason", "count", "first", "last", "from", "to", "grants",
    ]  # fmt: skip
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for kind, rows in (
        ("grant", report["grants"]),
        ("denial", report["denials"]),
        ("degraded", report["degraded"]),
    ):
        for row in rows:
            writer.writerow({"kind": kind, **row})
    return out.getvalue()
