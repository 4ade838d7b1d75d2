"""Break-glass notifications as JSON POSTs to one webhook, in order, with bounded retries.

`notify` only queues (the step's answer never waits on a chat tool); one background task sends
each event in turn: up to `attempts` tries with exponential backoff (tenacity), retried on a
connection failure, a timeout, 429 or 5xx, given up on any other 4xx (the receiver will not
change its mind). With a secret, X-Credbroker-Signature: sha256=<HMAC-SHA256 of the body>.
The body is the audit event (never a secret: the use case builds it from ids and names) plus a
`text` line for chat tools. Failures are logged and counted, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

log = logging.getLogger("credbroker.notify")

SIGNATURE_HEADER = "X-Credbroker-Signature"
_QUEUE_LIMIT = 1000


class _TryAgain(Exception):
    """A failure worth another try (unreachable, timeout, 429, 5xx)."""


class WebhookNotifier:
    def __init__(
        self,
        url: str,
        *,
        secret: bytes | None = None,
        attempts: int = 5,
        backoff_seconds: float = 0.5,
        backoff_max_seconds: float = 10.0,
        timeout_seconds: float = 5.0,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self._url = url
        self._secret = secret
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._backoff_max = backoff_max_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._on_result = on_result
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def notify(self, event: Mapping[str, Any]) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(_QUEUE_LIMIT)
            self._worker = asyncio.get_running_loop().create_task(
                self._send_all(self._queue), name="credbroker-webhook"
            )
        try:
            self._queue.put_nowait(dict(event))
        except asyncio.QueueFull:
            log.error("break-glass webhook: %d notifications waiting; dropped one", _QUEUE_LIMIT)
            self._count("dropped")

    async def flush(self) -> None:
        """Wait until every queued notification was delivered or given up."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self, *, drain_seconds: float = 10.0) -> None:
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_seconds)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._session is not None:
            await self._session.close()

    async def _send_all(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            event = await queue.get()
            try:
                await self._deliver(event)
            except Exception as exc:  # never let one notification stop the rest
                log.error("break-glass webhook: %s", type(exc).__name__)
            finally:
                queue.task_done()

    async def _deliver(self, event: Mapping[str, Any]) -> None:
        body = json.dumps({"text": _summary(event), **event}, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "credbroker"}
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        session = self._session
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(multiplier=self._backoff, max=self._backoff_max),
                retry=retry_if_exception_type(_TryAgain),
            ):
                with attempt:
                    await self._post(session, body, headers)
        except RetryError:
            log.error(
                "break-glass webhook: %s not delivered after %d tries",
                event.get("step"),
                self._attempts,
            )
            self._count("failed")
            return
        except _GiveUp as refused:
            log.error("break-glass webhook: %s refused with %s", event.get("step"), refused)
            self._count("failed")
            return
        self._count("delivered")

    async def _post(
        self, session: aiohttp.ClientSession, body: bytes, headers: Mapping[str, str]
    ) -> None:
        try:
            async with session.post(self._url, data=body, headers=headers) as answer:
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("break-glass webhook unreachable (%s); retrying", type(exc).__name__)
            raise _TryAgain from None
        if status == 429 or status >= 500:
            log.warning("break-glass webhook answered %d; retrying", status)
            raise _TryAgain
        if status >= 300:
            raise _GiveUp(status)

    def _count(self, outcome: str) -> None:
        if self._on_result is not None:
            self._on_result(outcome)


class _GiveUp(Exception):
    """The receiver refused (a 3xx or 4xx other than 429): no retry."""


class NullNotifier:
    """No webhook configured: the audit log, the log and the metrics still say it all."""

    def notify(self, event: Mapping[str, Any]) -> None:
        return None

    async def close(self) -> None:
        return None


def _summary(event: Mapping[str, Any]) -> str:
    return (
        f"credbroker break-glass {event.get('step')} ({event.get('outcome')}): request "
        f"{event.get('request_id')} by {event.get('requester')}, {event.get('access')} on "
        f"{event.get('space')}, status {event.get('status')}, by {event.get('client')}: "
        f"{event.get('reason')}"
    )
