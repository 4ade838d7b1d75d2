"""The audit file follows logrotate by itself: a file moved away or deleted is replaced by a
new one (0600) at the next event, and nothing is lost or written to the moved file after."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from credbroker.audit.jsonl import JsonLinesAudit


def _events(path: Path) -> list[int]:
    return [json.loads(line)["n"] for line in path.read_text().splitlines()]


async def test_a_rotated_away_file_is_replaced_at_the_next_event(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    audit = JsonLinesAudit(path)
    await audit.record({"n": 1})
    path.rename(tmp_path / "audit.jsonl.1")  # what logrotate does before its postrotate

    await audit.record({"n": 2})
    await audit.record({"n": 3})
    await audit.close()

    assert _events(tmp_path / "audit.jsonl.1") == [1]
    assert _events(path) == [2, 3]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_a_deleted_file_is_recreated(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = JsonLinesAudit(path)
    await audit.record({"n": 1})
    path.unlink()

    await audit.record({"n": 2})
    await audit.close()

    assert _events(path) == [2]


async def test_an_unrotated_file_keeps_one_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = JsonLinesAudit(path)
    for n in range(5):
        await audit.record({"n": n})
    await audit.close()
    assert _events(path) == [0, 1, 2, 3, 4]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
