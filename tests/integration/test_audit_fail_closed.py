"""Fail closed, on the real RGW: when the audit record cannot be written, no key leaves; the
answer says so (503 audit_unavailable), a metric counts it and a log line names the sink."""

from __future__ import annotations

import json

import pytest

from credbroker.audit.chain import read_files, verify_lines
from tests.integration.conftest import Harness

pytestmark = pytest.mark.rgw


async def test_an_unwritable_audit_file_refuses_the_vend(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    ok = await broker.vend("eng-reader", {"space": "ENG", "access": "read"})
    assert ok.status == 201
    path = broker.audit_path
    path.unlink()
    path.mkdir()  # the next open of the audit file fails (EISDIR), even for root

    refused = await broker.vend("eng-reader", {"space": "ENG", "access": "read"})
    body = await refused.json()
    assert refused.status == 503
    assert body["error"]["code"] == "audit_unavailable"
    assert "accessKeyId" not in json.dumps(body) and "secretAccessKey" not in json.dumps(body)
    assert "audit sink file failed (IsADirectoryError)" in caplog.text
    metrics = await (await broker.client.get("/metrics")).text()
    assert 'credbroker_audit_failures_total{sink="file"}' in metrics
    failures = [
        line
        for line in metrics.splitlines()
        if line.startswith('credbroker_audit_failures_total{sink="file"}')
    ]
    assert float(failures[0].split()[-1]) >= 1.0

    # Writable again: the chain goes on from the last record that was written.
    path.rmdir()
    again = await broker.vend("eng-reader", {"space": "ENG", "access": "read"})
    assert again.status == 201
    records = [json.loads(x) for x in path.read_text().splitlines()]
    assert records[0]["seq"] == 2  # seq 1 is in the file deleted above; none was skipped
    report = verify_lines(read_files([path]), None)
    assert report.ok, report.first_problem()
