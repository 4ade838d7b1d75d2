"""The lifecycle every HTTP double shares: listen on 127.0.0.1 (over TLS when the double gives a
context), stop, start again on the same port (so a client sees connection refused in between),
and `async with`."""

from __future__ import annotations

import ssl
from typing import Self

from aiohttp import web


class LoopbackServer:
    # Requests under this route reach `_handle`.
    route = "/{tail:.*}"

    def __init__(self) -> None:
        self._port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    def _ssl_context(self) -> ssl.SSLContext | None:
        """None: plain HTTP. A double that speaks TLS returns its server context."""
        return None

    async def start(self) -> None:
        """Listen on 127.0.0.1: a free port the first time, the same port after stop()."""
        app = web.Application()
        app.router.add_route("*", self.route, self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        context = self._ssl_context()
        await web.TCPSite(self._runner, "127.0.0.1", self._port, ssl_context=context).start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the listener: clients now get connection refused. State is kept."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"
