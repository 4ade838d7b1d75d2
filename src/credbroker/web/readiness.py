"""/readyz from a short-lived cached result, with at most one upstream probe in flight.

An unauthenticated caller may ask as often as it likes: the secret store and the object store
see at most one probe per `cache_seconds` (single-flight: concurrent askers share the probe in
flight), so a flood cannot take the vend path's worker threads or pooled connections, and the
secret-store probe goes around the circuit breaker (`ResilientSecretStore.probe`), so a flood
cannot open it either. A probe slower than `deadline_seconds` is reported as a timeout and left
to finish on its own (never a second one beside it). A breaker state change drops the cached
result (`invalidate`), so readiness follows degraded mode at once.

    200 "ready"      both stores answer
    200 "degraded"   the secret store is unreachable, the read-only fallback serves reads
    503 "not_ready"  anything else
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


class Readiness:
    def __init__(
        self,
        *,
        secret_store: Probe,
        object_store: Probe,
        fallback: ReadOnlyFallback | None,
        freezes: Callable[[], Mapping[str, Any]] | None = None,
        cache_seconds: float = 1.0,
        deadline_seconds: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes: Mapping[str, Probe] = {
            "secret_store": secret_store,
            "object_store": object_store,
        }
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
        status, body = _verdict(checks)
        if self._freezes is not None:
            body = _with_freezes(status, body, self._freezes())
        return status, body

    async def close(self) -> None:
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


def _verdict(checks: Checks) -> tuple[int, dict[str, Any]]:
    store, objects = checks["secret_store"], checks["object_store"]
    if store["ok"] and objects["ok"]:
        return 200, {"status": "ready", "checks": checks}
    if (
        objects["ok"]
        and store["code"] in _UNREACHABLE
        and checks.get("read_only_fallback", {}).get("ok")
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
