"""docs/audit.md lists every field of the audit records a real broker writes, per event.
The field list is read from the doc (one place); documented fields a run does not produce are
allowed, so a field added to every record only needs its row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import Harness

pytestmark = pytest.mark.rgw

DOC = Path(__file__).parents[2] / "docs" / "audit.md"


def documented() -> dict[str, set[str]]:
    """field -> the events it may appear in ("*": every event)."""
    text = DOC.read_text()
    table = text.split("<!-- audit-fields:start -->")[1].split("<!-- audit-fields:end -->")[0]
    fields: dict[str, set[str]] = {}
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        fields[cells[0].strip("`")] = {e.strip() for e in cells[1].split(",")}
    return fields


async def test_every_field_of_real_records_is_documented_for_its_event(broker: Harness) -> None:
    read = {"space": "ENG", "access": "read", "reason": "audit doc", "rule": "r", "actor": "a"}
    assert (await broker.vend("eng-reader", read)).status == 201
    response = await broker.client.post(
        "/v1/presign",
        json={"space": "ENG", "key": "a.txt", "method": "GET"},
        headers={"Authorization": f"Bearer {broker.tokens['eng-reader']}"},
    )
    assert response.status == 201
    assert (await broker.vend("eng-reader", {"space": "OPS", "access": "read"})).status == 403
    refused = await broker.client.post("/v1/credentials", json=read)  # no token
    assert refused.status == 401

    records = [json.loads(line) for line in broker.audit_path.read_text().splitlines()]
    assert {r["event"] for r in records} >= {"vend", "presign", "denied", "refused"}
    fields = documented()
    undocumented = sorted(
        {
            f"{record['event']}.{name}"
            for record in records
            for name in record
            if not ({"*", record["event"]} & fields.get(name, set()))
        }
    )
    assert undocumented == [], undocumented
