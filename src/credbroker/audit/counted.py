"""An audit sink that counts its failures (credbroker_audit_failures, the alert
CredbrokerAuditSinkFailing) and passes them on: a record that cannot be written still fails
the request that needed it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from credbroker.ports import AuditSink


class CountedAudit:
    def __init__(self, inner: AuditSink, on_failure: Callable[[str], None]) -> None:
        self._inner = inner
        self._on_failure = on_failure

    async def record(self, event: Mapping[str, Any]) -> None:
        try:
            await self._inner.record(event)
        except Exception as exc:
            self._on_failure(type(exc).__name__)
            raise

    async def close(self) -> None:
        await self._inner.close()
