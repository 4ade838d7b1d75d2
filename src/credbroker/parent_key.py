"""The parent key (the service's access key the broker signs STS calls with), read from the
secret store at call time.

A short cache (may be 0) keeps a burst of requests from becoming a burst of vault reads;
concurrent misses share one read. The cache is dropped when rotation writes a new version,
and when the object store rejects a cached key (someone else rotated it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from credbroker.domain import AccessKey
from credbroker.ports import SecretStore


class ParentKeySource:
    """The current parent key from `path` in the secret store, through a short cache."""

    def __init__(
        self,
        store: SecretStore,
        path: str,
        *,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.path = path
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cached: AccessKey | None = None
        self._fetched_at = 0.0
        self._inflight: asyncio.Future[AccessKey] | None = None

    async def current(self) -> AccessKey:
        cached = self._cached
        if cached is not None and self._clock() - self._fetched_at < self._cache_seconds:
            return cached
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._clear_inflight)
        # shield: one cancelled caller must not cancel the read the others are waiting for.
        return await asyncio.shield(self._inflight)

    def _clear_inflight(self, future: asyncio.Future[AccessKey]) -> None:
        if self._inflight is future:
            self._inflight = None
        if not future.cancelled():
            future.exception()  # mark retrieved: failures reach callers, not the loop's log

    async def _fetch(self) -> AccessKey:
        credentials = AccessKey.from_secret(await self.store.read(self.path))
        self._cached, self._fetched_at = credentials, self._clock()
        return credentials

    def invalidate(self, *, version: int | None = None) -> None:
        """Forget the cached key (only if it is still `version`, when given)."""
        if version is None or (self._cached is not None and self._cached.version == version):
            self._cached = None
