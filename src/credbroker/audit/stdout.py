"""Chained audit lines on standard output, one JSON object per line (container platforms)."""

from __future__ import annotations

import sys
from typing import BinaryIO


class StdoutLines:
    name = "stdout"

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream

    async def write(self, line: bytes) -> None:
        stream = self._stream or sys.stdout.buffer
        stream.write(line + b"\n")
        stream.flush()

    async def close(self) -> None:
        return None
