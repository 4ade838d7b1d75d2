"""Who asked, added to every audit record written while an API request is served.

The web layer binds the caller's address when a request starts and the client id once the
token is checked (contextvars: per request, no plumbing through the centre); `RequestAudit`
adds them to each record. Records written outside a request (the scheduler, the CLI) carry
neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from credbroker.ports import AuditSink

SOURCE: ContextVar[str | None] = ContextVar("credbroker_audit_source", default=None)
CLIENT: ContextVar[str | None] = ContextVar("credbroker_audit_client", default=None)


class RequestAudit:
    """An AuditSink that adds `source` (the caller's address) and, when a record names no
    client, `client` (the authenticated caller: e.g. the admin who forced a rotation)."""

    def __init__(self, inner: AuditSink) -> None:
        self._inner = inner

    async def record(self, event: Mapping[str, Any]) -> None:
        source, client = SOURCE.get(), CLIENT.get()
        if source is None and client is None:
            await self._inner.record(event)
            return
        enriched = dict(event)
        if source is not None:
            enriched.setdefault("source", source)
        if client is not None and enriched.get("client") is None:
            enriched["client"] = client
        await self._inner.record(enriched)

    async def close(self) -> None:
        await self._inner.close()
