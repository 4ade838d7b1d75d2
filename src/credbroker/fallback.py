"""The read-only fallback: keys of an object-store identity whose own policy allows only reads.

While the secret store answers, `keep_fresh` re-reads them every `refresh_seconds` and keeps
them in memory and in a sealed file (AES-256-GCM, secrets/sealing.py: the file never holds a
key in plain text), so even a broker restarted during an outage can serve reads. While the
store is unreachable, vend.py signs read requests, and only those, with them (ports.ReadOnlyKeys);
once they are older than `max_staleness_seconds` (since they were last read from the store),
reads are refused too.

Degraded mode follows the secret store's circuit breaker: entered when it opens, left when it
closes (a trial call got through). Each change is one log line and credbroker_degraded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from credbroker.domain import AccessKey, BreakerState
from credbroker.errors import (
    CredbrokerError,
    SealError,
    SecretStoreError,
    SecretStoreUnavailable,
)
from credbroker.ports import BrokerMetrics, SealedCache, SecretStore

log = logging.getLogger("credbroker.fallback")


@dataclass(frozen=True, slots=True)
class _Snapshot:
    credentials: AccessKey
    fetched_at: datetime  # when the store last confirmed these keys (wall clock: survives restarts)


class ReadOnlyFallback:
    def __init__(
        self,
        store: SecretStore,
        *,
        path: str,
        role_arn: str | None,
        cache: SealedCache,
        refresh_seconds: float,
        retry_seconds: float,
        max_staleness_seconds: float,
        metrics: BrokerMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.role_arn = role_arn
        self._store = store
        self._path = path
        self._cache = cache
        self._refresh_seconds = refresh_seconds
        self._retry_seconds = retry_seconds
        self._max_staleness = max_staleness_seconds
        self._metrics = metrics
        self._clock = clock
        self._snapshot: _Snapshot | None = None
        self._degraded = False
        self._refresh_failing = False

    # --- what vend.py and /readyz use ---------------------------------------------------------

    def credentials(self) -> AccessKey:
        problem = self.problem()
        if problem is not None or self._snapshot is None:
            raise SecretStoreUnavailable(
                f"the secret store is unreachable and {problem}: reads are refused too"
            )
        return self._snapshot.credentials

    def problem(self) -> str | None:
        """Why the fallback key could not serve reads right now (None: it could)."""
        snapshot = self._snapshot
        if snapshot is None:
            return "no read-only fallback key was ever read"
        age = self._age(snapshot)
        if age > self._max_staleness:
            return (
                f"the read-only fallback key is {age:.0f}s old, over the "
                f"{self._max_staleness:g}s maximum staleness"
            )
        return None

    def age_seconds(self) -> float | None:
        """Seconds since the store last confirmed the fallback keys (None: never read)."""
        return None if self._snapshot is None else self._age(self._snapshot)

    @property
    def max_staleness_seconds(self) -> float:
        return self._max_staleness

    @property
    def degraded(self) -> bool:
        return self._degraded

    # --- degraded mode --------------------------------------------------------------------------

    def store_state_changed(self, state: BreakerState) -> None:
        """Listener for the secret store's circuit breaker."""
        if state is BreakerState.OPEN and not self._degraded:
            self._degraded = True
            self._metrics.set_degraded(True)
            log.warning(
                "entering degraded mode: the secret store is unreachable; reads are served with "
                "the read-only fallback key (%s), writes get 503 vault_unavailable",
                self._describe_age(),
            )
        elif state is BreakerState.CLOSED and self._degraded:
            self._degraded = False
            self._metrics.set_degraded(False)
            log.warning("leaving degraded mode: the secret store answers again; writes resume")

    # --- keeping the keys fresh -------------------------------------------------------------

    async def keep_fresh(self) -> None:
        """Run until cancelled; never raises. While the store answers, refresh every
        refresh_seconds; while it does not, try every retry_seconds (each try is also the
        breaker's trial call, so degraded mode ends without waiting for traffic)."""
        while True:
            delay = self._refresh_seconds
            try:
                await self.refresh()
            except Exception as exc:
                delay = self._retry_seconds
                self._note_failure(exc)
            await asyncio.sleep(delay)

    async def refresh(self) -> None:
        """Read the keys from the store, then keep them in memory and sealed on disk."""
        secret = await self._store.read(self._path)
        try:
            credentials = AccessKey.from_secret(secret)
        except KeyError:
            raise SecretStoreError(
                f"secret {self._path!r} needs the fields access_key_id and secret_access_key"
            ) from None
        snapshot = _Snapshot(credentials, self._clock())
        self._snapshot = snapshot
        await asyncio.to_thread(self._save, snapshot)
        if self._refresh_failing:
            log.info("read-only fallback key refreshed again (version %s)", credentials.version)
            self._refresh_failing = False

    def load_cache(self) -> None:
        """At start: the last sealed keys, if any. An unreadable, foreign or wrongly keyed file
        is logged and ignored; the next refresh replaces it."""
        try:
            plaintext = self._cache.load()
            if plaintext is None:
                return
            snapshot = self._parse(plaintext)
        except SealError as exc:
            log.warning("fallback cache %s ignored: %s", self._cache, exc.message)
            return
        if snapshot is None:
            log.warning("fallback cache %s ignored: not for %r", self._cache, self._path)
            return
        if self._snapshot is None or snapshot.fetched_at > self._snapshot.fetched_at:
            self._snapshot = snapshot
        log.info("read-only fallback key loaded from %s (%s)", self._cache, self._describe_age())

    # --- internals ----------------------------------------------------------------------------

    def _age(self, snapshot: _Snapshot) -> float:
        return max(0.0, (self._clock() - snapshot.fetched_at).total_seconds())

    def _describe_age(self) -> str:
        age = self.age_seconds()
        return "never read" if age is None else f"read {age:.0f}s ago"

    def _save(self, snapshot: _Snapshot) -> None:
        plaintext = json.dumps(
            {
                "path": self._path,
                "access_key_id": snapshot.credentials.access_key_id,
                "secret_access_key": snapshot.credentials.secret_access_key,
                "version": snapshot.credentials.version,
                "fetched_at": snapshot.fetched_at.isoformat(),
            }
        ).encode()
        self._cache.save(plaintext)

    def _parse(self, plaintext: bytes) -> _Snapshot | None:
        try:
            data = json.loads(plaintext)
            if data["path"] != self._path:
                return None
            fetched_at = datetime.fromisoformat(data["fetched_at"])
            credentials = AccessKey(
                access_key_id=str(data["access_key_id"]),
                secret_access_key=str(data["secret_access_key"]),
                version=int(data["version"]),
            )
        except (KeyError, TypeError, ValueError):
            raise SealError("the fallback cache holds no usable keys") from None
        return _Snapshot(credentials, fetched_at)

    def _note_failure(self, exc: Exception) -> None:
        # Error messages never hold secrets (errors.py); anything else is named by its type.
        what = (
            f"{exc.message} [{exc.code}]"
            if isinstance(exc, CredbrokerError)
            else type(exc).__name__
        )
        level = logging.DEBUG if self._refresh_failing else logging.WARNING
        self._refresh_failing = True
        log.log(level, "read-only fallback key not refreshed: %s (%s)", what, self._describe_age())
