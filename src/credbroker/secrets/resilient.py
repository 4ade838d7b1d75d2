"""Any SecretStore behind a deadline, bounded retries with jitter, and a circuit breaker.

ResilientSecretStore is itself a SecretStore; wiring.py puts one around every configured store.
The adapters decide what "unreachable" means: they raise SecretStoreUnavailable for a sealed
Vault (503), any 5xx or 429, connection refused, DNS failure and their own timeouts. This
wrapper adds one deadline over the whole call on top, because a thread stuck in DNS resolution
or a proxy that trickles bytes can outlast an adapter's per-request timeouts.

    read, check   deadline, retries (SecretStoreUnavailable only, full jitter), breaker
    write         deadline and breaker, never retried: a write that timed out may have
                  happened, and repeating it blind could add a version nobody asked for.
                  Callers that must retry a write do it with `cas`.

Only SecretStoreUnavailable counts against the breaker. A store that answers and refuses
(SecretStorePermissionDenied, SecretNotFound, CasMismatch, ...) is reachable: the error passes
straight through, is never retried, and counts as a success. While the breaker is open, calls
fail at once with SecretStoreCircuitOpen (a SecretStoreUnavailable), without touching the store.

The breaker moves only on outcomes of calls it admitted in its current state: each call notes
the breaker's generation when it starts, and an outcome that arrives after the state changed
(a slow read admitted while closed that succeeds after the breaker opened) is ignored, so the
breaker does not flap. `probe()` (readiness) goes around the breaker entirely: its outcome
moves nothing, so no outside caller can open or close it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from credbroker.domain import BreakerState, SecretVersion
from credbroker.errors import (
    SecretStoreCircuitOpen,
    SecretStoreError,
    SecretStoreUnavailable,
)
from credbroker.ports import SecretStore

log = logging.getLogger("credbroker.secrets.resilient")

_T = TypeVar("_T")


Listener = Callable[[BreakerState], None]


class CircuitBreaker:
    """closed --(failure_threshold unreachable calls in a row)--> open --(open_seconds)-->
    half_open: one trial call goes through; it succeeds -> closed, it fails -> open again.

    Every state change starts a new generation. An outcome reported with the generation its
    call started in counts only while that generation lasts (late outcomes are ignored).

    Every state change is logged once and told to each listener once. Event-loop only (no
    locks): all its methods run between awaits.
    """

    def __init__(
        self,
        *,
        failure_threshold: int,
        open_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or open_seconds <= 0:
            raise ValueError("failure_threshold must be >= 1 and open_seconds > 0")
        self._threshold = failure_threshold
        self._open_seconds = open_seconds
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._generation = 0
        self._listeners: list[Listener] = []

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.retry_after() == 0:
            self._change(BreakerState.HALF_OPEN, "letting one trial call through")
        return self._state

    @property
    def generation(self) -> int:
        """Bumped by every state change; read it right after acquire()."""
        return self._generation

    @property
    def open_seconds(self) -> float:
        return self._open_seconds

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 if it would now)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._open_seconds - self._clock())

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def acquire(self) -> bool:
        """Admit a call, or raise SecretStoreCircuitOpen. True if it is the half-open trial."""
        state = self.state
        if state is BreakerState.CLOSED:
            return False
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        wait = self.retry_after()
        raise SecretStoreCircuitOpen(
            "the secret store is unreachable (circuit breaker open"
            + (f", next try in {wait:.1f}s)" if wait else ", a trial call is in flight)"),
            retry_after=wait or None,
        )

    def _stale(self, generation: int | None) -> bool:
        return generation is not None and generation != self._generation

    def succeeded(self, *, trial: bool, generation: int | None = None) -> None:
        """The store answered (a refusal is an answer too)."""
        if self._stale(generation):
            return
        if trial:
            self._trial_in_flight = False
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._change(BreakerState.CLOSED, "the secret store answers again")

    def failed(self, reason: str, *, trial: bool, generation: int | None = None) -> None:
        """The store was unreachable. `reason` is an error message (never a secret)."""
        if self._stale(generation):
            return
        if trial:
            self._trial_in_flight = False
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self._threshold
        ):
            self._opened_at = self._clock()
            self._change(
                BreakerState.OPEN,
                f"{self._failures} unreachable call(s) in a row, last: {reason}; "
                f"calls fail fast for {self._open_seconds:g}s",
            )

    def abandoned(self, *, trial: bool, generation: int | None = None) -> None:
        """The call ended without a verdict (cancelled): only free the trial slot."""
        if trial and not self._stale(generation):
            self._trial_in_flight = False

    def _change(self, state: BreakerState, why: str) -> None:
        self._state = state
        self._generation += 1
        self._trial_in_flight = False  # a trial belongs to the half-open state it ran in
        if state is BreakerState.CLOSED:
            self._failures = 0
        log.warning("secret store circuit breaker %s: %s", state.value, why)
        for listener in self._listeners:
            try:
                listener(state)
            except Exception:  # a listener must never break a secret-store call
                log.exception("circuit breaker listener failed")


class ResilientSecretStore:
    """SecretStore wrapper; see the module docstring for what each call gets."""

    def __init__(
        self,
        inner: SecretStore,
        *,
        breaker: CircuitBreaker,
        timeout_seconds: float,
        attempts: int = 3,
        backoff_seconds: float = 0.05,
        backoff_max_seconds: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if timeout_seconds <= 0 or attempts < 1:
            raise ValueError("timeout_seconds must be > 0 and attempts >= 1")
        self.inner = inner
        self.breaker = breaker
        self.kind = inner.kind
        self.writable = inner.writable
        self._timeout = timeout_seconds
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._backoff_max = backoff_max_seconds
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"ResilientSecretStore({self.inner!r}, breaker={self.breaker.state.value})"

    async def read(self, path: str) -> SecretVersion:
        return await self._call("read", path, lambda: self.inner.read(path), retry=True)

    async def read_version(self, path: str, version: int) -> SecretVersion:
        return await self._call(
            "read", f"{path}@{version}", lambda: self.inner.read_version(path, version), retry=True
        )

    async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
        return await self._call(
            "write", path, lambda: self.inner.write(path, data, cas=cas), retry=False
        )

    async def check(self) -> None:
        await self._call("check", "-", self.inner.check, retry=True)

    async def probe(self) -> None:
        """Readiness: one check of the store, no retries, around the breaker (its outcome moves
        nothing). While the breaker is open the answer is the breaker's, without a call."""
        wait = self.breaker.retry_after()
        if wait > 0:
            raise SecretStoreCircuitOpen(
                f"the secret store is unreachable (circuit breaker open, next try in {wait:.1f}s)",
                retry_after=wait,
            )
        await self.inner.check()

    async def close(self) -> None:
        await self.inner.close()

    async def _call(
        self, action: str, path: str, call: Callable[[], Awaitable[_T]], *, retry: bool
    ) -> _T:
        trial = self.breaker.acquire()
        generation = self.breaker.generation  # outcomes count only in the state they began in
        try:
            result = await self._bounded(action, path, call, retry=retry)
        except SecretStoreUnavailable as exc:
            self.breaker.failed(exc.message, trial=trial, generation=generation)
            if exc.retry_after is None:
                # When the breaker will try again; while it is still closed, soon.
                exc.retry_after = self.breaker.retry_after() or 1.0
            raise
        except SecretStoreError:
            self.breaker.succeeded(trial=trial, generation=generation)  # it answered, refused
            raise
        except BaseException:
            self.breaker.abandoned(trial=trial, generation=generation)
            raise
        self.breaker.succeeded(trial=trial, generation=generation)
        return result

    async def _bounded(
        self, action: str, path: str, call: Callable[[], Awaitable[_T]], *, retry: bool
    ) -> _T:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts if retry else 1)
            | stop_before_delay(self._timeout),
            wait=wait_random_exponential(multiplier=self._backoff, max=self._backoff_max),
            retry=retry_if_exception_type(SecretStoreUnavailable),
            before_sleep=lambda state: log.debug(
                "secret store %s of %r: attempt %d unreachable, retrying",
                action,
                path,
                state.attempt_number,
            ),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async with asyncio.timeout(self._timeout):
                async for attempt in retrying:
                    with attempt:
                        return await call()
        except TimeoutError:
            pass  # raised below, outside the handler: no exception chain is kept
        raise SecretStoreUnavailable(
            f"secret store {action} of {path!r}: no answer within {self._timeout:g}s"
        )
