"""`credbroker health`: the liveness probe the container image runs, against a real listener
(web/server.py) on loopback, plain and over TLS, with and without required client certificates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from credbroker.cli import main
from credbroker.config import LimitsConfig, ServerTlsConfig
from credbroker.observability import Metrics
from credbroker.web import server
from credbroker.web.appkeys import METRICS
from support.rgw_server import free_port
from tests.tls_certs import TestCa


def _config(tmp_path: Path, port: int, tls: dict[str, Any] | None = None) -> Path:
    path = tmp_path / "credbroker.yaml"
    server_config: dict[str, Any] = {"host": "0.0.0.0", "port": port}  # noqa: S104 - probe maps it
    if tls is not None:
        server_config["tls"] = tls
    path.write_text(
        json.dumps(
            {
                "server": server_config,
                "secret_store": {"kind": "embedded", "path": "s.sealed", "key_file": "seal.key"},
                "object_store": {"endpoint": "http://127.0.0.1:9"},
                "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
            }
        )
    )
    return path


async def _serving(port: int, tls: ServerTlsConfig | None, ready: int = 200) -> AsyncIterator[None]:
    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ready" if ready == 200 else "not_ready"}, status=ready)

    app = web.Application()
    app[METRICS] = Metrics()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    stop = asyncio.Event()
    started: list[int] = []
    task = asyncio.create_task(
        server.serve(
            app,
            host="127.0.0.1",
            port=port,
            limits=LimitsConfig(),
            stop=stop,
            started=started.append,
            tls=server.TlsContexts(tls) if tls is not None else None,
        )
    )
    while not started:
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        stop.set()
        await task


async def _probe(*argv: str) -> int:
    return await asyncio.to_thread(main, ["health", *argv])


async def test_plain_http_alive_and_ready(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = str(_config(tmp_path, port))
    async for _ in _serving(port, None, ready=503):
        assert await _probe("--config", config) == 0
        assert await _probe("--config", config, "--ready") == 1  # 503 not_ready
    assert "/readyz 503 not_ready" in capsys.readouterr().out
    assert await _probe("--config", config) == 1  # nothing listens any more


@pytest.mark.parametrize("mode", ["off", "optional", "required"])
async def test_over_tls_whatever_the_client_certificate_mode(tmp_path: Path, mode: str) -> None:
    ca = TestCa(tmp_path)
    issued = ca.issue("server", "credbroker.test", server=True)  # not issued for 127.0.0.1
    tls = {"cert_file": str(issued.cert), "key_file": str(issued.key), "client_certs": mode}
    if mode != "off":
        tls["client_ca_file"] = str(ca.cert_file)
    port = free_port()
    config = str(_config(tmp_path, port, tls))
    async for _ in _serving(port, ServerTlsConfig.model_validate(tls)):
        assert await _probe("--config", config) == 0
    assert await _probe("--config", config) == 1
