"""The webhook notifier against a real aiohttp receiver on loopback: in order, one delivery
per event, retried after a 503, given up (not retried) on a 400, signed with HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac

from credbroker.notify.webhook import SIGNATURE_HEADER, WebhookNotifier
from tests.webhook_receiver import receiver


async def test_each_event_is_delivered_once_in_order_after_retries_and_signed() -> None:
    results: list[str] = []
    async with receiver(fail_first=2) as got:
        notifier = WebhookNotifier(
            got.url, secret=b"hook-key", attempts=4, backoff_seconds=0.01, on_result=results.append
        )
        for step in ("request", "approve", "collect"):
            notifier.notify({"step": step, "request_id": "bg-1", "outcome": "ok"})
        await notifier.flush()
        await notifier.close()
    assert [e["step"] for e in got.events] == ["request", "approve", "collect"]
    assert got.attempts == 5  # two 503s, then each event once
    assert results == ["delivered"] * 3
    for body, headers in zip(got.bodies, got.headers, strict=True):
        expected = hmac.new(b"hook-key", body, hashlib.sha256).hexdigest()
        assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
        assert b"hook-key" not in body
    assert "bg-1" in got.events[0]["text"]


async def test_bounded_retries_then_given_up_and_a_4xx_is_not_retried() -> None:
    results: list[str] = []
    async with receiver(fail_first=100) as got:
        notifier = WebhookNotifier(
            got.url, attempts=3, backoff_seconds=0.01, on_result=results.append
        )
        notifier.notify({"step": "request"})
        await notifier.flush()
        await notifier.close()
    assert got.attempts == 3 and got.events == [] and results == ["failed"]

    results.clear()
    async with receiver(status_after=400) as refusing:
        notifier = WebhookNotifier(
            refusing.url, attempts=3, backoff_seconds=0.01, on_result=results.append
        )
        notifier.notify({"step": "request"})
        await notifier.flush()
        await notifier.close()
    assert refusing.attempts == 1 and results == ["failed"]


async def test_an_unreachable_webhook_never_raises() -> None:
    results: list[str] = []
    notifier = WebhookNotifier(
        "http://127.0.0.1:9/hook", attempts=2, backoff_seconds=0.01, on_result=results.append
    )
    notifier.notify({"step": "request"})
    await notifier.flush()
    await notifier.close()
    assert results == ["failed"]
