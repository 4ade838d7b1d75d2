"""The audit trail read back from the audit file and its rotated siblings (AuditTrail)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from credbroker.audit.chain import (
    load_public_key,
    read_files,
    record_of,
    rotated_files,
    verify_lines,
)
from credbroker.compliance.trail import record_time


def read_records(files: Iterable[Path]) -> list[dict[str, Any]]:
    """Every readable record of `files`, in file order (unreadable lines are skipped here;
    `credbroker audit verify` names them)."""
    found: list[dict[str, Any]] = []
    for _, line in read_files(files):
        try:
            record = record_of(line)
        except ValueError:
            continue
        if record is not None:
            found.append(record)
    return found


class FileTrail:
    def __init__(self, path: Path | None, public_key: Path | None) -> None:
        self._path = path
        self._public_key = public_key

    def _files(self, since: datetime | None = None) -> list[Path]:
        if self._path is None:
            return []
        files = rotated_files(self._path)
        if since is None:
            return files
        return [p for p in files if p.stat().st_mtime >= since.timestamp()]

    async def records(self, since: datetime, until: datetime) -> list[Mapping[str, Any]]:
        def read() -> list[Mapping[str, Any]]:
            chosen: list[Mapping[str, Any]] = []
            for record in read_records(self._files(since)):
                moment = record_time(record)
                if moment is not None and since <= moment < until:
                    chosen.append(record)
            return chosen

        return await asyncio.to_thread(read)

    async def verify(self, since: datetime) -> tuple[bool, str | None, list[dict[str, Any]]]:
        def check() -> tuple[bool, str | None, list[dict[str, Any]]]:
            files = self._files(since)
            if not files:
                return False, "no audit file holds records of the last day", []
            key = None
            if self._public_key is not None and self._public_key.exists():
                key = load_public_key(self._public_key.read_bytes())
            report = verify_lines(read_files(files), key)
            summary = report.as_dict()
            return report.ok, report.first_problem(), list(summary["chains"])

        return await asyncio.to_thread(check)
