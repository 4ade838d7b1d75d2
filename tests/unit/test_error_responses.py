from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import cast

import aiohttp
import pytest
from aiohttp import web

from credbroker.audit.context import RequestAudit
from credbroker.callers.composite import CallerAuthChain
from credbroker.callers.tokens import TokenAuth
from credbroker.domain import Access, Client
from credbroker.errors import InvalidRequest
from credbroker.observability import Metrics
from credbroker.policy import is_printable_text, validate_object_key
from credbroker.web import handlers, openapi
from credbroker.web.appkeys import METRICS, RUNTIME
from credbroker.web.errors import error_middleware, error_response
from credbroker.web.schemas import (
    MAX_TTL_SECONDS,
    Credentials,
    CredentialsBody,
    ErrorBody,
    PresignBody,
)
from credbroker.wiring import Runtime
from tests.fakes import FakeAudit


@pytest.mark.parametrize(
    ("retry_after", "header"), [(None, "5"), (0.2, "1"), (1.5, "2"), (9.0, "9"), (3600.0, "60")]
)
def test_503_says_when_to_retry(retry_after: float | None, header: str) -> None:
    response = error_response(503, "vault_unavailable", "down", retry_after=retry_after)
    assert response.headers["Retry-After"] == header


def test_other_statuses_carry_no_retry_after() -> None:
    assert "Retry-After" not in error_response(502, "upstream_error", "x").headers


# --- no 500 for any input: the views and the middleware, on a broker that is never reached ---

TOKEN = "cbk_unit-test-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


class _Unreached:
    async def vend(self, *args: object) -> None:
        raise AssertionError("a malformed request reached the broker")

    presign = vend


@dataclass
class Served:
    """The views behind the error middleware on a real loopback socket, run as `serve` runs
    them (web.run_app: no handler cancellation when a client hangs up; aiohttp's TestServer
    would cancel instead)."""

    app: web.Application
    port: int
    session: aiohttp.ClientSession


@pytest.fixture
async def client() -> AsyncIterator[Served]:
    app = web.Application(middlewares=[error_middleware], client_max_size=16 * 1024)
    app[METRICS] = Metrics()
    clients = [(hashlib.sha256(TOKEN.encode()).hexdigest(), ALICE)]
    app[RUNTIME] = cast(
        Runtime,
        SimpleNamespace(
            caller_auth=CallerAuthChain(TokenAuth(clients)), broker=_Unreached(), audit=AUDIT
        ),
    )
    app.router.add_post("/v1/credentials", handlers.create_credentials)
    app.router.add_post("/v1/presign", handlers.create_presigned_url)
    app.router.add_get("/openapi.json", handlers.openapi_document)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
            yield Served(app, port, session)
    finally:
        await runner.cleanup()


ALICE = Client("alice", frozenset({"ENG"}), Access.WRITE, 3600)
# The audit sink the views' refusals go to; RequestAudit adds who asked, as wiring does.
AUDIT_RECORDS = FakeAudit()
AUDIT = RequestAudit(AUDIT_RECORDS)
_HOSTILE_BODIES = {
    "a 5,000-digit ttl": b'{"space": "ENG", "access": "read", "ttl_seconds": ' + b"9" * 5000 + b"}",
    "a 4,000-digit ttl": b'{"space": "ENG", "access": "read", "ttl_seconds": ' + b"9" * 4000 + b"}",
    "nested 8,000 deep": b'{"space": "ENG", "access": "read", "reason": '
    + b"[" * 8000
    + b"]" * 8000
    + b"}",
    "objects nested 2,500 deep": b'{"space": ' + b'{"a":' * 2500 + b"1" + b"}" * 2500 + b"}",
    "not UTF-8": b'{"space": "\xff\xfe", "access": "read"}',
    "a lone surrogate": b'{"space": "ENG", "access": "read", "reason": "\\ud800"}',
    "NaN": b'{"space": "ENG", "access": "read", "ttl_seconds": NaN}',
    "a huge float": b'{"space": "ENG", "access": "read", "ttl_seconds": 1e999}',
    "a list": b"[]",
    "empty": b"",
}


@pytest.mark.parametrize("body", _HOSTILE_BODIES.values(), ids=_HOSTILE_BODIES.keys())
async def test_hostile_bodies_get_400_never_500(
    client: Served, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.session.post("/v1/credentials", data=body, headers=HEADERS)
    assert response.status == 400
    error = ErrorBody.model_validate(await response.json()).error
    assert error.code in {"invalid_json", "invalid_field"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("ttl", [0, -1, MAX_TTL_SECONDS + 1, 10**40, "900", 900.0, True])
async def test_ttl_outside_its_range_or_type_is_refused(client: Served, ttl: object) -> None:
    body = {"space": "ENG", "access": "read", "ttl_seconds": ttl}
    response = await client.session.post("/v1/credentials", json=body, headers=HEADERS)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_field"


@pytest.mark.parametrize("field", ["reason", "rule", "actor"])
@pytest.mark.parametrize(
    "text",
    [
        "line\u2028split",
        "para\u2029split",
        "c1\x85next-line",
        "c1\x9bcsi",
        "tab\tin",
        "nul\x00",
        "bidi \u202eevil",
        "isolate \u2066x\u2069",
        "zero\u200bwidth",
        "joiner\u200d",
        "bom\ufeff",
        "x" * 257,
    ],
)
@pytest.mark.parametrize("route", ["/v1/credentials", "/v1/presign"])
async def test_free_text_that_reads_differently_is_refused(
    client: Served, route: str, field: str, text: str
) -> None:
    body: dict[str, object] = {"space": "ENG", field: text}
    body |= {"access": "read"} if route == "/v1/credentials" else {"key": "a", "method": "GET"}
    response = await client.session.post(route, json=body, headers=HEADERS)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_field"
    assert error["message"].startswith(field)


def test_free_text_reuses_the_object_key_check() -> None:
    for text in ("ok: Confluence rule #12 (ü, 日本)", "a" * 256):
        assert (
            CredentialsBody.model_validate(
                {"space": "ENG", "access": "read", "reason": text}
            ).reason
            == text
        )
    for text in ("a\u2028b", "a\u202eb"):
        assert not is_printable_text(text)
        with pytest.raises(InvalidRequest):
            validate_object_key(text)


@pytest.mark.parametrize(
    "header",
    [
        b"Bearer cbk_\xff\xfe",
        b"Bearer \xc3\xa9t\xc3\xa9",
        b"\xff",
        b"Bearer cbk_unit-test-token\x80",
    ],
)
async def test_a_non_ascii_authorization_header_is_401(client: Served, header: bytes) -> None:
    # aiohttp's client refuses to send such a header; the raw request is what an attacker sends.
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    body = b'{"space": "ENG", "access": "read"}'
    writer.write(
        b"POST /v1/credentials HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: "
        + header
        + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"401"
    error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "unauthenticated"


async def test_a_client_hanging_up_mid_body_is_logged_at_info(
    client: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="credbroker.web")
    _reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /v1/credentials HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 100\r\n\r\n"
        b'{"space": "E'
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    metrics = client.app[METRICS]
    # Wait (no clock) until the middleware has counted the request, whatever its outcome.
    while not (outcomes := _outcomes(metrics, "/v1/credentials")):
        await asyncio.sleep(0)
    assert outcomes == {"client_disconnected": 1.0}
    gone = [r for r in caplog.records if "hung up" in r.getMessage()]
    assert [r.levelno for r in gone] == [logging.INFO]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _outcomes(metrics: Metrics, route: str) -> dict[str, float]:
    return {
        sample.labels["outcome"]: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == "credbroker_requests_total" and sample.labels["route"] == route
    }


async def test_the_openapi_document_is_served_and_names_the_models(
    client: Served,
) -> None:
    response = await client.session.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document == openapi.document()
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    assert schemas["CredentialsBody"] == CredentialsBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    assert schemas["CredentialsBody"]["additionalProperties"] is False
    ttl = schemas["PresignBody"]["properties"]["ttl_seconds"]["anyOf"][0]
    assert (ttl["minimum"], ttl["maximum"]) == (1, MAX_TTL_SECONDS)
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    post = document["paths"]["/v1/credentials"]["post"]
    assert post["security"] == [{"bearer": []}]
    assert post["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def test_the_error_envelope_matches_its_model() -> None:
    response = error_response(400, "invalid_field", "ttl_seconds: too big")
    assert isinstance(response.body, bytes)
    body = ErrorBody.model_validate_json(response.body)
    assert (body.error.code, body.error.message) == ("invalid_field", "ttl_seconds: too big")


def test_secrets_stay_out_of_the_answer_models_repr() -> None:
    answer = Credentials(
        accessKeyId="AKIA",
        secretAccessKey="s3cr3t-value",
        sessionToken="token-value",
        expiration="2026-01-01T00:00:00Z",
        endpoint="https://rgw",
        region="us-east-1",
        bucket="b",
        prefix="ENG/",
        access="read",
        leaseId="lease",
        mode="normal",
    )
    assert "s3cr3t-value" not in repr(answer) and "token-value" not in repr(answer)
    assert answer.model_dump()["secretAccessKey"] == "s3cr3t-value"


@pytest.mark.parametrize("model", [CredentialsBody, PresignBody])
def test_the_documented_examples_are_valid_bodies(
    model: type[CredentialsBody | PresignBody],
) -> None:
    for example in model.model_json_schema()["examples"]:
        model.model_validate(example)


async def test_refusals_are_audited_once_with_the_caller(client: Served) -> None:
    """Every refused API call leaves one record naming the route, status, code, the caller's
    address and, once the token was checked, the client."""
    AUDIT_RECORDS.events.clear()
    async with client.session.post("/v1/credentials", data=b"{}") as answer:
        assert answer.status == 401
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with client.session.post("/v1/credentials", data=b"[", headers=headers) as answer:
        assert answer.status == 400
    async with client.session.get("/openapi.json") as answer:
        assert answer.status == 200
    first, second = AUDIT_RECORDS.events
    assert {k: first[k] for k in ("event", "route", "status", "code", "source")} == {
        "event": "refused",
        "route": "/v1/credentials",
        "status": 401,
        "code": "unauthenticated",
        "source": "127.0.0.1",
    }
    assert "client" not in first
    assert (second["status"], second["client"], second["source"]) == (400, "alice", "127.0.0.1")
    assert TOKEN not in repr(AUDIT_RECORDS.events)
