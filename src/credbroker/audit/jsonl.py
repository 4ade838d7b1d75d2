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
    """Appends one line per event. Follows log rotation by itself: when the file at `path` is
    no longer the one it writes to (logrotate moved it away, or it was deleted), the next event
    opens a new file there, mode 0600. No signal is needed, and every process (the server, the
    CLI) behaves the same; logrotate's `copytruncate` is not needed either. As a LineSink
    (`write`) it carries the chained records of audit/chain.py: the chain goes on in the new
    file."""

    name = "file"

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._open()

    def _open(self) -> None:
        assert self._path is not None
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        status = os.fstat(fd)
        old, self._fd, self._inode = self._fd, fd, (status.st_dev, status.st_ino)
        if old is not None:
            os.close(old)

    def _rotated(self) -> bool:
        assert self._path is not None
        try:
            status = os.stat(self._path)
        except FileNotFoundError:
            return True
        return (status.st_dev, status.st_ino) != self._inode

    async def record(self, event: Mapping[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":"), default=str, sort_keys=True)
        await self.write(line.encode())

    async def write(self, line: bytes) -> None:
        if self._path is None:
            log.info("%s", line.decode())
            return
        if self._fd is None or self._rotated():
            self._open()
            log.info("audit file %s reopened (rotated away)", self._path)
        assert self._fd is not None
        # One O_APPEND write per event: lines from several processes never interleave, and a
        # page-cache write of a few hundred bytes does not stall the loop.
        os.write(self._fd, line + b"\n")

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
