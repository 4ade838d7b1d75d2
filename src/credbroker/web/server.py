"""`credbroker serve`: aiohttp's AppRunner behind a listening socket of our own, for what
aiohttp's run_app cannot do (aiohttp 3.14):

- a cap on open connections (limits.max_connections): past it a new connection gets one 503
  `overloaded` and is closed, before anything is parsed;
- a deadline for the first request's headers (limits.header_timeout_seconds): aiohttp arms its
  keep-alive timer only once a first keep-alive response went out, so a connection that never
  finishes its first request line and headers would otherwise stay open for good. Later
  requests on the connection get aiohttp's keep-alive timeout (limits.keepalive_timeout_seconds).

Each connection's protocol is aiohttp's own request handler behind a thin relay that counts it
and watches for the end of the first header block; nothing else is changed.

With `server.tls`, each accepted connection is upgraded with `loop.start_tls` using the
listener's current SSLContext (TLS 1.2+, optionally asking for and verifying a client
certificate). SIGHUP reads the certificate, key and client CA files again and swaps in a new
context: new connections get it, open ones keep theirs, nothing is dropped; files that do not
load leave the old context in service (logged).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import ssl
from collections.abc import Callable

from aiohttp import web

from credbroker.config import LimitsConfig, ServerTlsConfig
from credbroker.observability import Metrics
from credbroker.web.appkeys import METRICS

log = logging.getLogger("credbroker.web.server")

_HEADERS_END = b"\r\n\r\n"


class TlsContexts:
    """The listener's server-side SSLContext, built from `server.tls` and rebuilt by reload()."""

    def __init__(self, config: ServerTlsConfig) -> None:
        self._config = config
        self.current = build_server_context(config)

    def reload(self) -> bool:
        """Read the files again; True if the new context is in service."""
        try:
            fresh = build_server_context(self._config)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("TLS reload failed, the previous certificate stays in service: %s", exc)
            return False
        self.current = fresh
        log.info("TLS certificate reloaded from %s", self._config.cert_file)
        return True


def build_server_context(config: ServerTlsConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if config.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.load_cert_chain(str(config.cert_file), str(config.key_file))
    if config.client_certs != "off":
        context.load_verify_locations(cafile=str(config.client_ca_file))
        context.verify_mode = (
            ssl.CERT_REQUIRED if config.client_certs == "required" else ssl.CERT_OPTIONAL
        )
    return context


class ConnectionGuard:
    """A protocol factory for loop.create_server around aiohttp's `web.Server`."""

    def __init__(
        self,
        server: web.Server,
        *,
        max_connections: int,
        header_timeout_seconds: float,
        metrics: Metrics,
        tls: TlsContexts | None = None,
    ) -> None:
        self._server = server
        self._max = max_connections
        self._header_timeout = header_timeout_seconds
        self._metrics = metrics
        self._tls = tls
        self._handshakes: set[asyncio.Task[None]] = set()
        self.open = 0
        metrics.connections.set_function(lambda: self.open)

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self._max:
            self._metrics.overloaded.labels("connections").inc()
            return _Refuse()
        self.open += 1
        relay = _Relay(self, self._server())
        if self._tls is None:
            return relay
        return _TlsStart(self, relay, self._tls.current)

    def _closed(self) -> None:
        self.open -= 1


class _TlsStart(asyncio.Protocol):
    """Holds a new connection's bytes until start_tls takes it over with the context that was
    current when it arrived; a failed handshake (no or a wrong client certificate when one is
    required, not TLS at all, too slow) closes it."""

    def __init__(self, guard: ConnectionGuard, relay: _Relay, context: ssl.SSLContext) -> None:
        self._guard = guard
        self._relay = relay
        self._context = context

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the ClientHello waits for start_tls
        task = asyncio.get_running_loop().create_task(self._start(transport))
        self._guard._handshakes.add(task)
        task.add_done_callback(self._guard._handshakes.discard)

    async def _start(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            secured = await loop.start_tls(
                transport,
                self._relay,
                self._context,
                server_side=True,
                ssl_handshake_timeout=self._guard._header_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("TLS handshake refused: %s", type(exc).__name__)
            self._guard._metrics.tls_handshake_failures.inc()
            transport.close()
            self._relay.release()
            return
        if secured is None:  # the peer went away during the handshake
            self._relay.release()
            return
        self._relay.connection_made(secured)

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.release()  # lost before start_tls took the transport over


class _Relay(asyncio.Protocol):
    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the end of what arrived, to find a header end split across reads
        self._made = False
        self._released = False

    def release(self) -> None:
        """Count the connection closed, once."""
        if not self._released:
            self._released = True
            self._guard._closed()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        self._made = True
        self._timer = loop.call_later(self._guard._header_timeout, self._too_slow, transport)
        self._inner.connection_made(transport)

    def _too_slow(self, transport: asyncio.BaseTransport) -> None:
        self._timer = None
        log.info("closing a connection whose first request headers did not arrive in time")
        transport.close()

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if _HEADERS_END in seen:
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = seen[-(len(_HEADERS_END) - 1) :]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.release()
        if self._made:  # a handshake that failed never reached aiohttp
            self._inner.connection_lost(exc)


def _overloaded_bytes() -> bytes:
    body = json.dumps(
        {"error": {"code": "overloaded", "message": "too many open connections; retry shortly"}}
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Retry-After: 1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_OVERLOADED = _overloaded_bytes()


class _Refuse(asyncio.Protocol):
    """A connection past the cap: one 503 overloaded, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(_OVERLOADED)
        transport.close()


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    limits: LimitsConfig,
    stop: asyncio.Event,
    started: Callable[[int], None] | None = None,
    tls: TlsContexts | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve `app` until `stop` is set, then shut down as run_app does (stop listening, let
    requests in progress finish, run the app's cleanup). `started` gets the bound port.
    `reuse_port`: one of several workers on the port (web/workers.py)."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.keepalive_timeout_seconds)
    await runner.setup()
    try:
        assert runner.server is not None  # set by setup()
        guard = ConnectionGuard(
            runner.server,
            max_connections=limits.max_connections,
            header_timeout_seconds=limits.header_timeout_seconds,
            metrics=app[METRICS],
            tls=tls,
        )
        listener = await asyncio.get_running_loop().create_server(
            guard, host, port, reuse_port=reuse_port or None
        )
        bound = listener.sockets[0].getsockname()[1]
        log.info("serving on %s://%s:%d", "https" if tls else "http", host, bound)
        if started is not None:
            started(bound)
        try:
            await stop.wait()
        finally:
            listener.close()
    finally:
        await runner.cleanup()


def run(
    app: web.Application,
    *,
    host: str,
    port: int,
    limits: LimitsConfig,
    tls: ServerTlsConfig | None = None,
    reuse_port: bool = False,
) -> None:
    """`credbroker serve`: until SIGINT or SIGTERM."""
    contexts = TlsContexts(tls) if tls is not None else None  # unreadable files fail start

    def hangup() -> None:
        # logrotate's usual postrotate: the audit file follows rotation by itself, so a HUP
        # only says so (and no longer ends the process, Python's default); with TLS it also
        # reloads the certificate.
        log.info("SIGHUP: the audit file follows log rotation by itself")
        if contexts is not None:
            contexts.reload()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, hangup)
        await serve(
            app,
            host=host,
            port=port,
            limits=limits,
            stop=stop,
            tls=contexts,
            reuse_port=reuse_port,
        )

    asyncio.run(main())
