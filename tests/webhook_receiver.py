"""A webhook receiver on loopback (aiohttp) for the break-glass notification tests: it keeps
every body and header it got, and answers the first `fail_first` POSTs with 503."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web


class Receiver:
    def __init__(self, *, fail_first: int = 0, status_after: int = 204) -> None:
        self.fail_first = fail_first
        self.status_after = status_after
        self.attempts = 0
        self.bodies: list[bytes] = []  # accepted ones only
        self.events: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.url = ""
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        if self.attempts <= self.fail_first:
            return web.Response(status=503)
        self.bodies.append(body)
        self.events.append(json.loads(body))
        self.headers.append(dict(request.headers))
        self.arrived.set()
        return web.Response(status=self.status_after)

    async def wait_for(self, count: int, timeout: float = 30.0) -> None:
        async def enough() -> None:
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)


@asynccontextmanager
async def receiver(**options: Any) -> AsyncIterator[Receiver]:
    got = Receiver(**options)
    app = web.Application()
    app.router.add_post("/hook", got.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    got.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield got
    finally:
        await runner.cleanup()
