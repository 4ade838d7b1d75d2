"""The embedded store's rollback watermark, opened on first use (ports.VersionWatermark).

The secret store is built synchronously (the CLI builds it before its event loop runs), and a
state store opens asynchronously (it migrates), so this opens the state store at the first
call, once, and closes it with itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from credbroker.ports import VersionWatermark


class LazyWatermark:
    def __init__(self, open_store: Callable[[], Awaitable[VersionWatermark]]) -> None:
        self._open_store = open_store
        self._store: VersionWatermark | None = None
        self._opening = asyncio.Lock()

    async def remember_version(self, store: str, path: str, version: int) -> int:
        if self._store is None:
            async with self._opening:
                if self._store is None:
                    self._store = await self._open_store()
        return await self._store.remember_version(store, path, version)

    async def close(self) -> None:
        opened, self._store = self._store, None
        if opened is not None:
            await opened.close()
