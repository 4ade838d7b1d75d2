"""`credbroker serve`'s listener over TLS, in process, with a test CA: HTTPS with TLS 1.2+,
client certificates mapped to clients (optional and required), refused handshakes, and a
certificate reload that new connections see while an open connection keeps working."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from credbroker.callers.certificates import CertificateAuth, CertificateRule
from credbroker.callers.composite import CallerAuthChain
from credbroker.callers.tokens import TokenAuth
from credbroker.config import LimitsConfig, ServerTlsConfig
from credbroker.domain import Access, Client
from credbroker.observability import Metrics
from credbroker.web import callers, server
from credbroker.web.appkeys import METRICS, RUNTIME
from credbroker.web.errors import error_middleware
from credbroker.wiring import Runtime
from tests.tls_certs import Issued, TestCa

TOKEN = "cbk_tls-unit-token"
RULE = Client("token-rule", frozenset({"ENG"}), Access.READ, 900)
GATEWAY = Client("gateway-rule", frozenset({"ENG"}), Access.WRITE, 900)
SPIFFE = Client("spiffe-rule", frozenset({"OPS"}), Access.READ, 900)


async def who(request: web.Request) -> web.Response:
    client = await callers.authenticate(request)
    return web.json_response({"client": client.id})


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestCa(tmp_path)


async def running(
    tls: ServerTlsConfig,
    contexts: list[server.TlsContexts] | None = None,
    metrics: list[Metrics] | None = None,
) -> AsyncIterator[int]:
    app = web.Application(middlewares=[error_middleware])
    app[METRICS] = Metrics()
    if metrics is not None:
        metrics.append(app[METRICS])
    auth = CallerAuthChain(
        TokenAuth([(hashlib.sha256(TOKEN.encode()).hexdigest(), RULE)]),
        certificates=CertificateAuth(
            [
                CertificateRule("cn", "gateway-1", GATEWAY),
                CertificateRule("uri", "spiffe://corp/ns/wiki/sa/rules", SPIFFE),
            ]
        ),
    )
    app[RUNTIME] = cast(Runtime, SimpleNamespace(caller_auth=auth))
    app.router.add_get("/who", who)
    stop = asyncio.Event()
    ports: list[int] = []
    tls_contexts = server.TlsContexts(tls)
    if contexts is not None:
        contexts.append(tls_contexts)
    task = asyncio.create_task(
        server.serve(
            app,
            host="127.0.0.1",
            port=0,
            limits=LimitsConfig(),
            stop=stop,
            started=ports.append,
            tls=tls_contexts,
        )
    )
    while not ports:
        await asyncio.sleep(0.01)
    try:
        yield ports[0]
    finally:
        stop.set()
        await task


def client_context(ca: TestCa, cert: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


async def ask(port: int, context: ssl.SSLContext, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://127.0.0.1:{port}/who", ssl=context, headers=headers) as answer,
    ):
        return answer.status, await answer.json()


def tls_config(ca: TestCa, mode: str = "optional") -> ServerTlsConfig:
    issued = ca.issue("server", "credbroker.test", server=True)
    return ServerTlsConfig(
        cert_file=issued.cert,
        key_file=issued.key,
        client_certs=mode,  # type: ignore[arg-type]
        client_ca_file=ca.cert_file if mode != "off" else None,
    )


async def test_https_with_the_ca_and_a_token(ca: TestCa) -> None:
    async for port in running(tls_config(ca, "off")):
        assert await ask(port, client_context(ca), TOKEN) == (200, {"client": "token-rule"})


async def test_a_client_without_the_ca_does_not_trust_the_broker(ca: TestCa) -> None:
    async for port in running(tls_config(ca, "off")):
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await ask(port, ssl.create_default_context(), TOKEN)


async def test_plain_http_to_the_tls_port_gets_no_answer(ca: TestCa) -> None:
    async for port in running(tls_config(ca, "off")):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not (await asyncio.wait_for(reader.read(), timeout=30)).startswith(b"HTTP/1.1 2")
        writer.close()


def test_the_listener_never_speaks_below_tls_1_2(ca: TestCa) -> None:
    context = server.build_server_context(tls_config(ca, "off"))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


async def test_with_min_version_1_3_a_tls_1_2_client_is_refused(ca: TestCa) -> None:
    config = tls_config(ca, "off").model_copy(update={"min_version": "1.3"})
    context = client_context(ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    async for port in running(config):
        with pytest.raises(aiohttp.ClientError):
            await ask(port, context, TOKEN)
        assert await ask(port, client_context(ca), TOKEN) == (200, {"client": "token-rule"})


async def test_a_client_certificate_maps_to_its_client(ca: TestCa) -> None:
    gateway = ca.issue("gateway", "gateway-1")
    spiffe = ca.issue("spiffe", "whatever", uris=("spiffe://corp/ns/wiki/sa/rules",))
    async for port in running(tls_config(ca, "optional")):
        assert await ask(port, client_context(ca, gateway)) == (200, {"client": "gateway-rule"})
        assert await ask(port, client_context(ca, spiffe)) == (200, {"client": "spiffe-rule"})
        # A token wins over the certificate: the gateway never lends its client.
        assert await ask(port, client_context(ca, gateway), TOKEN) == (
            200,
            {"client": "token-rule"},
        )


async def test_an_unmapped_certificate_or_none_is_401_when_optional(ca: TestCa) -> None:
    stranger = ca.issue("stranger", "someone-else")
    async for port in running(tls_config(ca, "optional")):
        status, body = await ask(port, client_context(ca, stranger))
        assert (status, body["error"]["code"]) == (401, "unauthenticated")
        status, body = await ask(port, client_context(ca))
        assert (status, body["error"]["code"]) == (401, "unauthenticated")


async def test_a_missing_or_foreign_certificate_is_refused_when_required(
    ca: TestCa, tmp_path: Path
) -> None:
    other_ca = TestCa(tmp_path, "another CA")
    foreign = other_ca.issue("foreign", "gateway-1")  # the right name, the wrong issuer
    gateway = ca.issue("gateway", "gateway-1")
    metrics: list[Metrics] = []
    async for port in running(tls_config(ca, "required"), metrics=metrics):
        for context in (client_context(ca), client_context(ca, foreign)):
            with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                await ask(port, context, TOKEN)
        # Each refused handshake is counted (aiohttp may try a request twice).
        failures = metrics[0].registry.get_sample_value("credbroker_tls_handshake_failures_total")
        assert failures is not None and failures >= 2
        assert await ask(port, client_context(ca, gateway)) == (200, {"client": "gateway-rule"})


async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Send GET /who on a kept-alive connection and read exactly one answer."""
    writer.write(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head


def common_name(peercert: Any) -> str:
    return str(dict(x[0] for x in peercert["subject"])["commonName"])


async def test_a_reload_serves_the_new_certificate_to_new_connections_only(ca: TestCa) -> None:
    config = tls_config(ca, "off")
    contexts: list[server.TlsContexts] = []
    async for port in running(config, contexts):
        context = client_context(ca)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        assert (await one_answer(reader, writer)).startswith(b"HTTP/1.1 401")
        assert common_name(writer.get_extra_info("peercert")) == "credbroker.test"

        renewed = ca.issue("renewed", "credbroker.renewed", server=True)
        config.cert_file.write_bytes(renewed.cert.read_bytes())
        config.key_file.write_bytes(renewed.key.read_bytes())
        assert contexts[0].reload()

        # The open connection keeps working, with the certificate it was opened with ...
        assert (await one_answer(reader, writer)).startswith(b"HTTP/1.1 401")
        assert common_name(writer.get_extra_info("peercert")) == "credbroker.test"
        writer.close()
        # ... and a new connection gets the new one.
        _, fresh = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        assert common_name(fresh.get_extra_info("peercert")) == "credbroker.renewed"
        fresh.close()


async def test_a_reload_with_broken_files_keeps_the_old_certificate(ca: TestCa) -> None:
    config = tls_config(ca, "off")
    contexts: list[server.TlsContexts] = []
    async for port in running(config, contexts):
        config.key_file.write_text("not a key")
        assert not contexts[0].reload()
        assert await ask(port, client_context(ca), TOKEN) == (200, {"client": "token-rule"})
