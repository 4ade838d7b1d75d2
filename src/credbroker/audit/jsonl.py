"""Audit events as JSON lines, appended to a file (or written to the log)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("credbroker.audit")


class JsonLinesAudit:
    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def record(self, event: Mapping[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":"), default=str, sort_keys=True)
        if self._fd is None:
            log.info("%s", line)
            return
        # One O_APPEND write per event: lines from several processes never interleave, and a
        # page-cache write of a few hundred bytes does not stall the loop.
        os.write(self._fd, line.encode() + b"\n")

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
