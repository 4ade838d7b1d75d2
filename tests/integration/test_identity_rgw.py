"""Verified identities end to end on the real RGW: an OIDC caller vends per its claims; a
space that checks its actor asks the Confluence double before vending; the broker over HTTPS
with a test CA vends to curl, by token or by client certificate. Every key vended here is
tried against RGW."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from credbroker.callers.tokens import new_token
from credbroker.web import server
from credbroker.web.app import create_app
from support.rgw_server import RgwServer
from tests.doubles.confluence import ConfluenceDataCenterDouble, ConfluenceDouble
from tests.doubles.oidc_provider import AUDIENCE, OidcProvider
from tests.integration.conftest import (
    MAIN_BUCKET,
    SERVICE_PATH,
    Harness,
    broker_settings,
    s3_client,
    start_broker,
)
from tests.tls_certs import TestCa

pytestmark = pytest.mark.rgw

CONFLUENCE_PATH = "credbroker/confluence"
VIEWER, EDITOR, STRANGER = "557058:viewer", "557058:editor", "557058:stranger"


def denied(call: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(**kwargs)
    return str(info.value.response["Error"]["Code"])


def seed_objects(rgw: RgwServer, *keys: str) -> None:
    admin = s3_client(rgw, rgw.admin_access_key, rgw.admin_secret_key)
    for key in keys:
        admin.put_object(Bucket=MAIN_BUCKET, Key=key, Body=key.encode())


async def post(harness: Harness, authorization: str, **body: Any) -> tuple[int, dict[str, Any]]:
    answer = await harness.client.post(
        "/v1/credentials", json=body, headers={"Authorization": authorization}
    )
    return answer.status, await answer.json()


# --- OIDC ---------------------------------------------------------------------------------------


@pytest.fixture
async def idp() -> AsyncIterator[OidcProvider]:
    provider = OidcProvider()
    await provider.start()
    provider.add_key("RSA", kid="rsa-1")
    provider.add_key("EC", kid="ec-1")
    yield provider
    await provider.close()


@pytest.fixture
async def oidc_broker(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path, idp: OidcProvider
) -> AsyncIterator[Harness]:
    oidc = {
        "issuer": idp.url,
        "audience": AUDIENCE,
        "claim": "groups",
        "name_claim": "preferred_username",
        "mappings": [
            {"value": "eng-readers", "spaces": ["ENG"], "max_access": "read"},
            {"value": "ops-writers", "spaces": ["OPS"], "max_access": "write"},
            {"value": "platform-admins", "roles": ["admin"]},
        ],
    }
    async with contextlib.aclosing(start_broker(rgw, tmp_path, oidc=oidc)) as brokers:
        async for harness in brokers:
            yield harness


async def test_an_oidc_caller_vends_per_its_claims(
    oidc_broker: Harness, idp: OidcProvider, rgw: RgwServer
) -> None:
    seed_objects(rgw, "ENG/oidc.txt", "OPS/oidc.txt")
    reader = idp.token("rsa-1", preferred_username="alice", groups=["eng-readers"])
    status, body = await post(oidc_broker, f"Bearer {reader}", space="ENG", access="read")
    assert status == 201, body
    s3 = oidc_broker.s3_for(body)
    assert s3.get_object(Bucket=MAIN_BUCKET, Key="ENG/oidc.txt")["Body"].read() == b"ENG/oidc.txt"
    assert denied(s3.get_object, Bucket=MAIN_BUCKET, Key="OPS/oidc.txt") == "AccessDenied"
    assert denied(s3.put_object, Bucket=MAIN_BUCKET, Key="ENG/x", Body=b"x") == "AccessDenied"
    # Its claims give no write and no OPS.
    status, body = await post(oidc_broker, f"Bearer {reader}", space="ENG", access="write")
    assert (status, body["error"]["code"]) == (403, "access_denied")
    status, body = await post(oidc_broker, f"Bearer {reader}", space="OPS", access="read")
    assert (status, body["error"]["code"]) == (403, "space_denied")

    writer = idp.token("ec-1", preferred_username="bob", groups=["ops-writers"])
    status, body = await post(oidc_broker, f"Bearer {writer}", space="OPS", access="write")
    assert status == 201, body
    oidc_broker.s3_for(body).put_object(Bucket=MAIN_BUCKET, Key="OPS/by-bob.txt", Body=b"b")

    records = [json.loads(line) for line in oidc_broker.audit_path.read_text().splitlines()]
    vends = [r for r in records if r["event"] == "vend"]
    assert [v["client"] for v in vends] == ["oidc:alice", "oidc:bob"]
    for token in (reader, writer):
        assert token not in oidc_broker.audit_path.read_text()


async def test_attacks_on_the_http_api_are_401(oidc_broker: Harness, idp: OidcProvider) -> None:
    now = int(time.time())
    for token in (
        idp.unsigned_token("rsa-1"),
        idp.hs256_with_public_key("rsa-1"),
        idp.token("rsa-1", exp=now - 600),
        idp.token("rsa-1", nbf=now + 600),
        idp.token("rsa-1", aud="another-app"),
    ):
        status, body = await post(oidc_broker, f"Bearer {token}", space="ENG", access="read")
        assert (status, body["error"]["code"]) == (401, "unauthenticated"), body


async def test_a_new_key_at_the_provider_is_followed_without_restart(
    oidc_broker: Harness, idp: OidcProvider
) -> None:
    first = idp.token("rsa-1", preferred_username="alice")
    assert (await post(oidc_broker, f"Bearer {first}", space="ENG", access="read"))[0] == 201
    idp.add_key("RSA", kid="rsa-2")  # rotation at the provider
    idp.retire("rsa-1")
    second = idp.token("rsa-2", preferred_username="alice")
    status, body = await post(oidc_broker, f"Bearer {second}", space="ENG", access="read")
    assert status == 201, body
    oidc_broker.s3_for(body).list_objects_v2(Bucket=MAIN_BUCKET, Prefix="ENG/")


async def test_oidc_operators_reach_the_admin_api_by_role(
    oidc_broker: Harness, idp: OidcProvider
) -> None:
    admin = idp.token("rsa-1", preferred_username="carol", groups=["platform-admins"])
    rule = idp.token("rsa-1", preferred_username="alice", groups=["eng-readers"])
    answer = await oidc_broker.client.get(
        "/v1/admin/rotations", headers={"Authorization": f"Bearer {rule}"}
    )
    assert (answer.status, (await answer.json())["error"]["code"]) == (403, "admin_required")
    answer = await oidc_broker.client.get(
        "/v1/admin/rotations", headers={"Authorization": f"Bearer {admin}"}
    )
    assert answer.status == 404  # past the admin check: no rotation is configured here


async def test_static_tokens_still_work_beside_oidc(oidc_broker: Harness) -> None:
    token = oidc_broker.tokens["eng-reader"]
    status, body = await post(oidc_broker, f"Bearer {token}", space="ENG", access="read")
    assert status == 201, body


# --- the Confluence actor -------------------------------------------------------------------


@pytest.fixture
async def wiki() -> AsyncIterator[ConfluenceDouble]:
    site = ConfluenceDouble(email="broker@example.org", api_token="confluence-token-never-logged")
    await site.start()
    for key in ("ENG", "OPS"):
        site.add_space(key)
        site.grant(key, VIEWER)
        site.grant(key, EDITOR, edit=True)
    yield site
    await site.close()


@pytest.fixture
async def checked_broker(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path, wiki: ConfluenceDouble
) -> AsyncIterator[Harness]:
    spaces = {
        "ENG": {"bucket": MAIN_BUCKET, "prefix": "ENG/", "actor_check": "confluence"},
        "OPS": {
            "bucket": MAIN_BUCKET,
            "prefix": "OPS/",
            "actor_check": "confluence",
            "actor_check_unavailable": "read-only",
        },
        "FIN": {"bucket": "cb-other", "prefix": "finance/"},
    }
    confluence = {"url": wiki.url, "credentials_path": CONFLUENCE_PATH, "cache_seconds": 0}
    seed = {CONFLUENCE_PATH: {"email": wiki.email, "api_token": wiki.api_token}}
    async with contextlib.aclosing(
        start_broker(rgw, tmp_path, spaces=spaces, confluence=confluence, seed=seed)
    ) as brokers:
        async for harness in brokers:
            yield harness


async def test_the_actor_decides_read_and_write(
    checked_broker: Harness, rgw: RgwServer, wiki: ConfluenceDouble
) -> None:
    seed_objects(rgw, "ENG/actor.txt")
    token = f"Bearer {checked_broker.tokens['eng-writer']}"
    status, body = await post(checked_broker, token, space="ENG", access="read", actor=VIEWER)
    assert status == 201, body
    got = checked_broker.s3_for(body).get_object(Bucket=MAIN_BUCKET, Key="ENG/actor.txt")
    assert got["Body"].read() == b"ENG/actor.txt"
    status, body = await post(checked_broker, token, space="ENG", access="write", actor=VIEWER)
    assert (status, body["error"]["code"]) == (403, "actor_not_permitted")
    status, body = await post(checked_broker, token, space="ENG", access="read", actor=STRANGER)
    assert (status, body["error"]["code"]) == (403, "actor_not_permitted")
    status, body = await post(checked_broker, token, space="ENG", access="write", actor=EDITOR)
    assert status == 201, body
    checked_broker.s3_for(body).put_object(Bucket=MAIN_BUCKET, Key="ENG/by-editor", Body=b"e")

    records = [json.loads(line) for line in checked_broker.audit_path.read_text().splitlines()]
    assert [r["actor_verified"] for r in records if r["event"] == "vend"] == [True, True]
    assert [r["code"] for r in records if r["event"] == "denied"] == ["actor_not_permitted"] * 2
    assert wiki.api_token not in checked_broker.audit_path.read_text()


async def test_confluence_down_fails_closed_or_serves_reads_as_configured(
    checked_broker: Harness, rgw: RgwServer, wiki: ConfluenceDouble
) -> None:
    seed_objects(rgw, "OPS/while-down.txt")
    wiki.down = True
    eng = f"Bearer {checked_broker.tokens['eng-writer']}"
    status, body = await post(checked_broker, eng, space="ENG", access="read", actor=VIEWER)
    assert (status, body["error"]["code"]) == (503, "confluence_unavailable")
    ops = f"Bearer {checked_broker.tokens['ops-writer']}"
    status, body = await post(checked_broker, ops, space="OPS", access="read", actor=VIEWER)
    assert status == 201, body  # OPS: read-only while Confluence is down
    got = checked_broker.s3_for(body).get_object(Bucket=MAIN_BUCKET, Key="OPS/while-down.txt")
    assert got["Body"].read() == b"OPS/while-down.txt"
    status, body = await post(checked_broker, ops, space="OPS", access="write", actor=EDITOR)
    assert (status, body["error"]["code"]) == (503, "confluence_unavailable")


async def test_a_429_from_confluence_is_honoured(
    checked_broker: Harness, wiki: ConfluenceDouble
) -> None:
    token = f"Bearer {checked_broker.tokens['eng-writer']}"
    wiki.rate_limit(1, retry_after=0.2)  # short: waited out
    status, body = await post(checked_broker, token, space="ENG", access="read", actor=VIEWER)
    assert status == 201, body
    wiki.rate_limit(1, retry_after=120)  # long: 503 with Retry-After, nothing minted
    answer = await checked_broker.client.post(
        "/v1/credentials",
        json={"space": "ENG", "access": "read", "actor": VIEWER},
        headers={"Authorization": token},
    )
    # Confluence's own Retry-After, capped at 60 as every Retry-After the broker sends.
    assert answer.status == 503 and answer.headers["Retry-After"] == "60"


# --- the Confluence actor, on Data Center (personal access token, usernames) ------------------

DC_PAT = "dc-personal-access-token-never-logged"


@pytest.fixture
async def dc_wiki() -> AsyncIterator[ConfluenceDataCenterDouble]:
    site = ConfluenceDataCenterDouble(pat=DC_PAT)
    await site.start()
    for key in ("ENG", "OPS"):
        site.add_space(key)
        site.grant(key, "dc.viewer")
        site.grant(key, "dc.editor", edit=True)
    yield site
    await site.close()


@pytest.fixture
async def dc_broker(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path, dc_wiki: ConfluenceDataCenterDouble
) -> AsyncIterator[Harness]:
    spaces = {
        "ENG": {"bucket": MAIN_BUCKET, "prefix": "ENG/", "actor_check": "confluence"},
        "OPS": {
            "bucket": MAIN_BUCKET,
            "prefix": "OPS/",
            "actor_check": "confluence",
            "actor_check_unavailable": "read-only",
        },
    }
    confluence = {
        "url": dc_wiki.url,
        "deployment": "datacenter",
        "auth": "bearer",
        "actor_id": "username",
        "credentials_path": CONFLUENCE_PATH,
        "cache_seconds": 0,
    }
    seed = {CONFLUENCE_PATH: {"token": DC_PAT}}
    async with contextlib.aclosing(
        start_broker(rgw, tmp_path, spaces=spaces, confluence=confluence, seed=seed)
    ) as brokers:
        async for harness in brokers:
            yield harness


async def test_data_center_decides_read_and_write_by_username(
    dc_broker: Harness,
    rgw: RgwServer,
    dc_wiki: ConfluenceDataCenterDouble,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed_objects(rgw, "ENG/dc.txt")
    token = f"Bearer {dc_broker.tokens['eng-writer']}"
    status, body = await post(dc_broker, token, space="ENG", access="read", actor="dc.viewer")
    assert status == 201, body
    got = dc_broker.s3_for(body).get_object(Bucket=MAIN_BUCKET, Key="ENG/dc.txt")
    assert got["Body"].read() == b"ENG/dc.txt"
    status, body = await post(dc_broker, token, space="ENG", access="write", actor="dc.viewer")
    assert (status, body["error"]["code"]) == (403, "actor_not_permitted")
    status, body = await post(dc_broker, token, space="ENG", access="read", actor=VIEWER)
    assert (status, body["error"]["code"]) == (403, "actor_not_permitted")  # a Cloud id
    status, body = await post(dc_broker, token, space="ENG", access="write", actor="dc.editor")
    assert status == 201, body
    dc_broker.s3_for(body).put_object(Bucket=MAIN_BUCKET, Key="ENG/by-dc-editor", Body=b"e")
    assert ("POST", "/rpc/json-rpc/confluenceservice-v2") in dc_wiki.requests

    dc_wiki.down = True
    ops = f"Bearer {dc_broker.tokens['ops-writer']}"
    status, body = await post(dc_broker, ops, space="OPS", access="read", actor="dc.viewer")
    assert status == 201, body  # read-only while Data Center is down
    status, body = await post(dc_broker, ops, space="OPS", access="write", actor="dc.editor")
    assert (status, body["error"]["code"]) == (503, "confluence_unavailable")
    status, body = await post(dc_broker, token, space="ENG", access="read", actor="dc.viewer")
    assert (status, body["error"]["code"]) == (503, "confluence_unavailable")

    dc_wiki.down, dc_wiki.pat = False, "a-rotated-token"  # the broker's PAT no longer works
    status, body = await post(dc_broker, token, space="ENG", access="read", actor="dc.viewer")
    assert (status, body["error"]["code"]) == (502, "confluence_rejected")
    assert DC_PAT not in json.dumps(body)
    assert DC_PAT not in dc_broker.audit_path.read_text()
    assert DC_PAT not in caplog.text


# --- TLS and client certificates --------------------------------------------------------------


async def curl(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--max-time",
        "30",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return int(process.returncode or 0), out.decode() + err.decode()


async def test_curl_vends_over_https_by_token_and_by_client_certificate(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path
) -> None:
    ca = TestCa(tmp_path)
    issued = ca.issue("server", "credbroker.test", server=True)
    gateway = ca.issue("gateway", "gateway-1")
    stranger = TestCa(tmp_path, "other CA").issue("stranger", "gateway-1")
    tokens, hashes = {}, {}
    for name in ("eng-writer", "eng-reader", "ops-writer"):
        tokens[name], hashes[name] = new_token()
    tls = {
        "cert_file": str(issued.cert),
        "key_file": str(issued.key),
        "client_certs": "required",
        "client_ca_file": str(ca.cert_file),
        "client_certificates": [{"cn": "gateway-1", "client": "eng-reader"}],
    }
    settings = broker_settings(
        rgw, tmp_path, hashes, server={"host": "127.0.0.1", "port": 0, "tls": tls}
    )
    from credbroker.secrets.embedded import EmbeddedSecretStore
    from credbroker.secrets.sealing import load_key

    store = EmbeddedSecretStore(
        tmp_path / "secrets.sealed", load_key(key_file=tmp_path / "seal.key")
    )
    await store.write(
        SERVICE_PATH,
        {"access_key_id": rgw.broker_access_key, "secret_access_key": rgw.broker_secret_key},
        cas=None,
    )
    assert settings.server.tls is not None
    stop, ports = asyncio.Event(), list[int]()
    task = asyncio.create_task(
        server.serve(
            create_app(settings),
            host="127.0.0.1",
            port=0,
            limits=settings.limits,
            stop=stop,
            started=ports.append,
            tls=server.TlsContexts(settings.server.tls),
        )
    )
    try:
        while not ports:
            await asyncio.sleep(0.01)
        url = f"https://127.0.0.1:{ports[0]}/v1/credentials"
        body = json.dumps({"space": "ENG", "access": "read"})
        common = ["--cacert", str(ca.cert_file), "-H", "Content-Type: application/json", "-d", body]
        mtls = ["--cert", str(gateway.cert), "--key", str(gateway.key)]
        # The gateway's certificate alone names its client.
        code, out = await curl(*common, *mtls, url)
        assert code == 0, out
        vended = json.loads(out)
        assert vended["prefix"] == "ENG/", vended
        s3 = s3_client(
            rgw, vended["accessKeyId"], vended["secretAccessKey"], vended["sessionToken"]
        )
        s3.list_objects_v2(Bucket=MAIN_BUCKET, Prefix="ENG/")
        assert denied(s3.put_object, Bucket=MAIN_BUCKET, Key="ENG/x", Body=b"x") == "AccessDenied"
        # With a token too: the token names the client (eng-writer may write).
        writer = ["-H", f"Authorization: Bearer {tokens['eng-writer']}"]
        code, out = await curl(
            *common[:4], "-d", json.dumps({"space": "ENG", "access": "write"}), *mtls, *writer, url
        )
        assert code == 0 and json.loads(out)["access"] == "write", out
        # Required: no certificate, or one from another CA, never reaches HTTP.
        code, out = await curl(*common, *writer, url)
        assert code != 0, out
        code, out = await curl(
            *common, "--cert", str(stranger.cert), "--key", str(stranger.key), *writer, url
        )
        assert code != 0, out
        # Without the CA curl does not trust the broker.
        code, out = await curl("-d", body, *mtls, url)
        assert code == 60, out  # CURLE_PEER_FAILED_VERIFICATION
    finally:
        stop.set()
        await task
