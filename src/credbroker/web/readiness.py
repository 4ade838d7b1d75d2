"""/readyz from a short-lived cached result, with at most one upstream probe in flight.

An unauthenticated caller may ask as often as it likes: the secret store and the object store
see at most one probe per `cache_seconds` (single-flight: concurrent askers share the probe in
flight), so a flood cannot take the vend path's worker threads or pooled connections, and the
secret-store probe goes around the circuit breaker (`ResilientSecretStore.probe`), so a flood
cannot open it either. A probe slower than `deadline_seconds` is reported as a timeout and left
to finish on its own (never a second one beside it). A breaker state change drops the cached
result (`invalidate`), so readiness follows degraded mode at once.

Ready means a vend would succeed, so besides "do both stores answer" it asks (wiring.py
names the checks): is every configured secret present and usable (`secrets`: the service key,
the read-only fallback key, the admin keys of managed rotation credentials; a rolled-back store
is refused here), is the fallback key fresh (`read_only_fallback`), and does the vend role mint
a key that works (`vend_canary`: an AssumeRole with a one-prefix session policy plus one list of
the first space with the minted key). The canary runs on a schedule (`Canary`, every
`readiness.canary_seconds`), never per probe: /readyz reports its last result and age.

    200 "ready"      every check passes
    200 "degraded"   the secret store is unreachable (and only that fails, or checks that need
                     it), the read-only fallback serves reads
    503 "not_ready"  anything else

Each check's outcome is also a gauge (credbroker_readiness_check{check}), set at every answer
and after every canary run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from credbroker.errors import CredbrokerError, SecretStoreUnavailable
from credbroker.fallback import ReadOnlyFallback

log = logging.getLogger("credbroker.web.readiness")

Probe = Callable[[], Awaitable[None]]
Checks = dict[str, dict[str, Any]]

_UNREACHABLE = frozenset({SecretStoreUnavailable.code, "timeout"})
CANARY = "vend_canary"


class Canary:
    """The last outcome of a check too costly to run per probe (the vend canary), run on
    Readiness's schedule every `interval_seconds`; `latest` (a readiness probe) re-raises its
    failure. Before the first run has ended, `latest` waits for it (one run at a time); a run
    that never reached the check proper because the secret store was unreachable is run again
    by the next `latest` (at most once per readiness cache interval), so readiness follows the
    store's recovery without waiting for the schedule."""

    def __init__(
        self,
        check: Probe,
        *,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._last: tuple[float, BaseException | None] | None = None
        self._run: asyncio.Task[None] | None = None
        self.runs = 0

    async def run_once(self) -> None:
        """One run (or join the one in flight); its outcome becomes the latest."""
        if self._run is None or self._run.done():
            self._run = asyncio.create_task(self._once(), name="credbroker-readiness-canary")
        await asyncio.shield(self._run)

    async def _once(self) -> None:
        self.runs += 1
        failure: BaseException | None = None
        try:
            await self._check()
        except Exception as exc:
            failure = exc
            if not isinstance(exc, CredbrokerError):
                log.warning("vend canary failed: %s", type(exc).__name__)
        self._last = (self._clock(), failure)

    async def latest(self) -> None:
        if self._last is None or _unreachable(self._last[1]):
            await self.run_once()
        assert self._last is not None
        failure = self._last[1]
        if failure is not None:
            raise failure

    def age_seconds(self) -> float | None:
        return None if self._last is None else max(0.0, self._clock() - self._last[0])

    async def close(self) -> None:
        if self._run is not None and not self._run.done():
            self._run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._run


class Readiness:
    def __init__(
        self,
        *,
        secret_store: Probe,
        object_store: Probe,
        fallback: ReadOnlyFallback | None,
        freezes: Callable[[], Mapping[str, Any]] | None = None,
        checks: Mapping[str, Probe] | None = None,
        canary: Canary | None = None,
        on_check: Callable[[str, bool], None] | None = None,
        cache_seconds: float = 1.0,
        deadline_seconds: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes: Mapping[str, Probe] = {
            "secret_store": secret_store,
            "object_store": object_store,
            **(checks or {}),
            **({CANARY: canary.latest} if canary is not None else {}),
        }
        self._canary = canary
        self._on_check = on_check
        self._canary_task: asyncio.Task[None] | None = None
        self._fallback = fallback
        self._freezes = freezes
        self._cache_seconds = cache_seconds
        self._deadline = deadline_seconds
        self._clock = clock
        self._epoch = 0  # bumped by invalidate(): results of older probes are not cached
        self._cached: Checks | None = None
        self._cached_until = 0.0
        self._task: asyncio.Task[Checks] | None = None
        self._task_epoch = -1
        self._running: set[asyncio.Task[Checks]] = set()  # an older epoch's may still run
        self._partial: Checks = {}
        self.probes_started = 0

    def invalidate(self, *_: object) -> None:
        """Forget the cached result (a breaker listener: takes and ignores the new state)."""
        self._epoch += 1
        self._cached = None

    async def report(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of /readyz."""
        checks = dict(await self._upstream())
        if self._fallback is not None:
            checks["read_only_fallback"] = _fallback_check(self._fallback)
        if self._canary is not None and CANARY in checks:
            age = self._canary.age_seconds()
            checks[CANARY] = {
                **checks[CANARY],
                "age_seconds": None if age is None else round(age, 1),
            }
        if self._on_check is not None:
            for name, check in checks.items():
                self._on_check(name, bool(check["ok"]))
        status, body = _verdict(checks)
        if self._freezes is not None:
            body = _with_freezes(status, body, self._freezes())
        return status, body

    def start(self) -> None:
        """Run the canary now and then every canary interval (each run refreshes the gauges)."""
        if self._canary is not None and self._canary_task is None:
            self._canary_task = asyncio.create_task(
                self._canary_forever(), name="credbroker-readiness-canary-schedule"
            )

    async def _canary_forever(self) -> None:
        canary = self._canary
        assert canary is not None
        while True:
            await canary.run_once()
            self.invalidate()  # the next answer carries this run's outcome
            with contextlib.suppress(Exception):  # an answer's own failures are in its checks
                await self.report()  # sets the gauges
            self.invalidate()  # an asker gets a fresh answer, not one cached by the schedule
            await asyncio.sleep(canary.interval_seconds)

    async def close(self) -> None:
        if self._canary_task is not None:
            self._canary_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._canary_task
            self._canary_task = None
        if self._canary is not None:
            await self._canary.close()
        for task in list(self._running):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _upstream(self) -> Checks:
        if self._cached is not None and self._clock() < self._cached_until:
            return self._cached
        task = self._task
        if task is None or task.done() or self._task_epoch != self._epoch:
            self._partial = {}
            task = self._task = asyncio.create_task(
                self._probe(self._epoch, self._partial), name="credbroker-readiness-probe"
            )
            self._task_epoch = self._epoch
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            self.probes_started += 1
        partial = self._partial
        done, _ = await asyncio.wait({task}, timeout=self._deadline)
        if task in done:
            return task.result()
        # Too slow: say so, remember it for a while, and let the probe finish on its own.
        checks = {
            name: partial.get(name)
            or {"ok": False, "code": "timeout", "message": f"no answer within {self._deadline:g}s"}
            for name in self._probes
        }
        self._keep(self._task_epoch, checks)
        return checks

    async def _probe(self, epoch: int, results: Checks) -> Checks:
        async def one(name: str, probe: Probe) -> None:
            results[name] = await _outcome(name, probe)

        await asyncio.gather(*(one(name, probe) for name, probe in self._probes.items()))
        checks = {name: results[name] for name in self._probes}
        self._keep(epoch, checks)
        return checks

    def _keep(self, epoch: int, checks: Checks) -> None:
        if epoch == self._epoch:
            self._cached = checks
            self._cached_until = self._clock() + self._cache_seconds


async def _outcome(name: str, probe: Probe) -> dict[str, Any]:
    try:
        await probe()
    except CredbrokerError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}
    except Exception as exc:  # a probe must answer "not ready", never a 500
        log.warning("readiness probe %s failed: %s", name, type(exc).__name__)
        return {"ok": False, "code": "probe_failed", "message": type(exc).__name__}
    return {"ok": True}


def _unreachable(failure: BaseException | None) -> bool:
    return isinstance(failure, CredbrokerError) and failure.code in _UNREACHABLE


def _verdict(checks: Checks) -> tuple[int, dict[str, Any]]:
    store, objects = checks["secret_store"], checks["object_store"]
    if all(check["ok"] for check in checks.values()):
        return 200, {"status": "ready", "checks": checks}
    # Degraded: the secret store is unreachable, and what else fails fails only because of it.
    others = (
        check
        for name, check in checks.items()
        if name not in {"secret_store", "object_store", "read_only_fallback"}
    )
    if (
        objects["ok"]
        and not store["ok"]
        and store.get("code") in _UNREACHABLE
        and checks.get("read_only_fallback", {}).get("ok")
        and all(check["ok"] or check.get("code") in _UNREACHABLE for check in others)
    ):
        reason = (
            f"secret store unreachable ({store['message']}): reads are served with the "
            "read-only fallback key, writes get 503 vault_unavailable"
        )
        return 200, {"status": "degraded", "reason": reason, "checks": checks}
    return 503, {"status": "not_ready", "checks": checks}


def _with_freezes(status: int, body: dict[str, Any], control: Mapping[str, Any]) -> dict[str, Any]:
    """Freezes are reported, never a reason to leave the load balancer: a frozen replica must
    answer callers with 503 `frozen` and the operator's reason, which an address taken out of
    rotation cannot. A global freeze turns "ready" into "frozen" (200)."""
    body = {**body, "checks": {**body["checks"], "control": control["check"]}}
    if control["freezes"]:
        body["freezes"] = control["freezes"]
        if status == 200 and control["global"]:
            body["status"] = "frozen"
            body["reason"] = "every vend and presign is frozen: " + control["global"]
    return body


def _fallback_check(fallback: ReadOnlyFallback) -> dict[str, Any]:
    age = fallback.age_seconds()
    check: dict[str, Any] = {
        "ok": True,
        "age_seconds": None if age is None else round(age, 1),
        "max_staleness_seconds": fallback.max_staleness_seconds,
    }
    problem = fallback.problem()
    if problem is not None:
        check |= {"ok": False, "message": problem}
    return check
