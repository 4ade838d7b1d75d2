"""End to end: vend over HTTP, then use the key against the real RGW and observe its limits."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
import botocore.exceptions
import pytest
from rgwadmin.rgw import RGWAdmin

from credbroker.audit.chain import CHAIN_FIELDS
from tests.integration.conftest import MAIN_BUCKET, OTHER_BUCKET, SERVICE_PATH, Harness, s3_client

pytestmark = pytest.mark.rgw

_RGWAdmin: Any = RGWAdmin  # rgwadmin ships py.typed but leaves its methods untyped


def error_code(call: Any, **kwargs: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call(**kwargs)
    return str(info.value.response["Error"]["Code"])


async def vended(harness: Harness, who: str, **body: Any) -> dict[str, Any]:
    response = await harness.vend(who, body)
    payload = await response.json()
    assert response.status == 201, payload
    return dict(payload)


def seed(harness: Harness, *keys: tuple[str, str]) -> None:
    admin = s3_client(harness.rgw, harness.rgw.admin_access_key, harness.rgw.admin_secret_key)
    for bucket, key in keys:
        admin.put_object(Bucket=bucket, Key=key, Body=f"content of {key}".encode())


async def test_read_key_reads_its_prefix_and_nothing_else(broker: Harness) -> None:
    seed(
        broker,
        (MAIN_BUCKET, "ENG/report.txt"),
        (MAIN_BUCKET, "OPS/secret.txt"),
        (MAIN_BUCKET, "ENGINEERING/x.txt"),
        (OTHER_BUCKET, "ENG/report.txt"),
    )
    body = await vended(broker, "eng-reader", space="ENG", access="read")
    assert body["bucket"] == MAIN_BUCKET and body["prefix"] == "ENG/" and body["access"] == "read"
    s3 = broker.s3_for(body)

    got = s3.get_object(Bucket=MAIN_BUCKET, Key="ENG/report.txt")["Body"].read()
    assert got == b"content of ENG/report.txt"
    # Other tests share the bucket: what matters is what this key lists, and that it is all
    # inside the prefix.
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=MAIN_BUCKET, Prefix="ENG/")["Contents"]]
    assert "ENG/report.txt" in listed
    assert all(key.startswith("ENG/") for key in listed)

    assert error_code(s3.get_object, Bucket=MAIN_BUCKET, Key="OPS/secret.txt") == "AccessDenied"
    # "ENG/" must not match "ENGINEERING/": the prefix ends with a slash.
    assert error_code(s3.get_object, Bucket=MAIN_BUCKET, Key="ENGINEERING/x.txt") == "AccessDenied"
    assert error_code(s3.get_object, Bucket=OTHER_BUCKET, Key="ENG/report.txt") == "AccessDenied"
    assert error_code(s3.list_objects_v2, Bucket=MAIN_BUCKET) == "AccessDenied"
    assert error_code(s3.list_objects_v2, Bucket=MAIN_BUCKET, Prefix="OPS/") == "AccessDenied"
    assert (
        error_code(s3.put_object, Bucket=MAIN_BUCKET, Key="ENG/new.txt", Body=b"x")
        == "AccessDenied"
    )
    assert error_code(s3.delete_object, Bucket=MAIN_BUCKET, Key="ENG/report.txt") == "AccessDenied"


async def test_write_key_writes_and_deletes_under_its_prefix_only(broker: Harness) -> None:
    body = await vended(broker, "eng-writer", space="ENG", access="write")
    s3 = broker.s3_for(body)
    s3.put_object(Bucket=MAIN_BUCKET, Key="ENG/out/export.pdf", Body=b"%PDF")
    assert s3.get_object(Bucket=MAIN_BUCKET, Key="ENG/out/export.pdf")["Body"].read() == b"%PDF"
    s3.delete_object(Bucket=MAIN_BUCKET, Key="ENG/out/export.pdf")
    assert error_code(s3.get_object, Bucket=MAIN_BUCKET, Key="ENG/out/export.pdf") == "NoSuchKey"

    for bucket, key in ((MAIN_BUCKET, "OPS/x"), (MAIN_BUCKET, "ENGX/x"), (OTHER_BUCKET, "ENG/x")):
        assert error_code(s3.put_object, Bucket=bucket, Key=key, Body=b"x") == "AccessDenied"
    seed(broker, (MAIN_BUCKET, "OPS/keep.txt"))
    assert error_code(s3.delete_object, Bucket=MAIN_BUCKET, Key="OPS/keep.txt") == "AccessDenied"


async def test_write_key_cannot_publish_what_it_writes(broker: Harness) -> None:
    s3 = broker.s3_for(await vended(broker, "eng-writer", space="ENG", access="write"))
    for acl in ("public-read", "public-read-write", "authenticated-read"):
        assert (
            error_code(s3.put_object, Bucket=MAIN_BUCKET, Key="ENG/p.txt", Body=b"x", ACL=acl)
            == "AccessDenied"
        )
    # The grant-header form passes RGW's policy check; the bucket's IgnorePublicAcls voids it.
    s3.put_object(
        Bucket=MAIN_BUCKET,
        Key="ENG/g.txt",
        Body=b"x",
        GrantRead='uri="http://acs.amazonaws.com/groups/global/AllUsers"',
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{broker.rgw.endpoint}/{MAIN_BUCKET}/ENG/g.txt") as anonymous,
    ):
        assert anonymous.status == 403


async def test_multipart_upload_works_inside_the_prefix(broker: Harness) -> None:
    s3 = broker.s3_for(await vended(broker, "eng-writer", space="ENG", access="write"))
    upload = s3.create_multipart_upload(Bucket=MAIN_BUCKET, Key="ENG/big.bin")
    part = s3.upload_part(
        Bucket=MAIN_BUCKET,
        Key="ENG/big.bin",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"x" * 1024,
    )
    s3.complete_multipart_upload(
        Bucket=MAIN_BUCKET,
        Key="ENG/big.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    assert s3.head_object(Bucket=MAIN_BUCKET, Key="ENG/big.bin")["ContentLength"] == 1024
    assert error_code(s3.create_multipart_upload, Bucket=MAIN_BUCKET, Key="OPS/big.bin") == (
        "AccessDenied"
    )


async def test_requested_prefix_narrows_and_never_widens(broker: Harness) -> None:
    seed(broker, (MAIN_BUCKET, "ENG/reports/q3.txt"), (MAIN_BUCKET, "ENG/drafts/d.txt"))
    body = await vended(broker, "eng-reader", space="ENG", access="read", prefix="reports")
    assert body["prefix"] == "ENG/reports/"
    s3 = broker.s3_for(body)
    assert s3.get_object(Bucket=MAIN_BUCKET, Key="ENG/reports/q3.txt")["Body"].read()
    assert error_code(s3.get_object, Bucket=MAIN_BUCKET, Key="ENG/drafts/d.txt") == "AccessDenied"


async def test_ttl_is_clamped_between_the_store_minimum_and_the_client_maximum(
    broker: Harness,
) -> None:
    now = datetime.now(UTC)
    short = await vended(broker, "eng-writer", space="ENG", access="read", ttl_seconds=60)
    long = await vended(broker, "eng-writer", space="ENG", access="read", ttl_seconds=86400)
    short_left = (datetime.fromisoformat(short["expiration"]) - now).total_seconds()
    long_left = (datetime.fromisoformat(long["expiration"]) - now).total_seconds()
    assert 880 <= short_left <= 920  # raised to the 900 s minimum
    assert 1780 <= long_left <= 1820  # cut to eng-writer's 1800 s maximum


async def test_presigned_get_and_put_work_and_tampering_is_rejected(broker: Harness) -> None:
    seed(broker, (MAIN_BUCKET, "ENG/files/Q3 report (final).pdf"))
    headers = {"Authorization": f"Bearer {broker.tokens['eng-writer']}"}
    async with aiohttp.ClientSession() as http:
        response = await broker.client.post(
            "/v1/presign",
            json={"space": "ENG", "key": "files/Q3 report (final).pdf", "method": "GET"},
            headers=headers,
        )
        get = await response.json()
        assert response.status == 201, get
        async with http.get(get["url"]) as r:
            assert r.status == 200
            assert await r.read() == b"content of ENG/files/Q3 report (final).pdf"

        response = await broker.client.post(
            "/v1/presign",
            json={"space": "ENG", "key": "uploads/new.txt", "method": "PUT", "ttl_seconds": 120},
            headers=headers,
        )
        put = await response.json()
        assert response.status == 201, put
        async with http.put(put["url"], data=b"uploaded") as r:
            assert r.status == 200, await r.text()
        # What the rule uploaded is where a read key for the space finds it.
        reader = broker.s3_for(await vended(broker, "eng-reader", space="ENG", access="read"))
        uploaded = reader.get_object(Bucket=MAIN_BUCKET, Key="ENG/uploads/new.txt")
        assert uploaded["Body"].read() == b"uploaded"

        url = get["url"]
        signature = url.rsplit("X-Amz-Signature=", 1)[1][:64]
        flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
        tampered = [
            url.replace(signature, flipped),
            url.replace("files/Q3", "files/Q4"),
            url.replace("X-Amz-Expires=900", "X-Amz-Expires=3600"),
            url.replace(f"/{MAIN_BUCKET}/", f"/{OTHER_BUCKET}/"),
        ]
        for bad in tampered:
            assert bad != url
            async with http.get(bad) as r:
                assert r.status == 403, bad


async def test_presigned_url_reaches_only_its_one_object(broker: Harness) -> None:
    seed(broker, (MAIN_BUCKET, "ENG/a.txt"), (MAIN_BUCKET, "ENG/b.txt"))
    response = await broker.client.post(
        "/v1/presign",
        json={"space": "ENG", "key": "a.txt", "method": "GET"},
        headers={"Authorization": f"Bearer {broker.tokens['eng-reader']}"},
    )
    assert response.status == 201
    # Read only space: a PUT presign is refused before anything is signed.
    response = await broker.client.post(
        "/v1/presign",
        json={"space": "ENG", "key": "a.txt", "method": "PUT"},
        headers={"Authorization": f"Bearer {broker.tokens['eng-reader']}"},
    )
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "access_denied"


@pytest.mark.parametrize(
    ("who", "body", "status", "code"),
    [
        ("eng-writer", {"space": "OPS", "access": "read"}, 403, "space_denied"),
        ("eng-writer", {"space": "NOPE", "access": "read"}, 403, "space_denied"),
        ("ops-writer", {"space": "ENG", "access": "write"}, 403, "space_denied"),
        ("eng-reader", {"space": "ENG", "access": "write"}, 403, "access_denied"),
    ],
)
async def test_clients_get_only_their_spaces_and_access(
    broker: Harness, who: str, body: dict[str, Any], status: int, code: str
) -> None:
    response = await broker.vend(who, body)
    assert response.status == status
    assert (await response.json())["error"]["code"] == code
    denials = [json.loads(line) for line in broker.audit_path.read_text().splitlines()]
    last = {k: v for k, v in denials[-1].items() if k not in CHAIN_FIELDS}  # docs/audit.md
    assert last | {"ts": None} == {
        "ts": None,
        "event": "denied",
        "client": who,
        "space": body["space"],
        "access": body["access"],
        "code": code,
        "source": "127.0.0.1",  # the caller's address, on every record of a request
    }
    assert len([d for d in denials if d.get("code") == code]) == 1  # one record per decision


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer cbk_wrong", "Basic Zm9vOmJhcg==", "bearer  "]
)
async def test_missing_or_wrong_token_is_401(broker: Harness, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await broker.client.post(
        "/v1/credentials", json={"space": "ENG", "access": "read"}, headers=headers
    )
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await response.json())["error"]["code"] == "unauthenticated"


HOSTILE_BODIES = [
    {"space": "ENG", "access": "read", "prefix": "*"},
    {"space": "ENG", "access": "read", "prefix": "../OPS"},
    {"space": "ENG", "access": "read", "prefix": "a/../../OPS"},
    {"space": "ENG", "access": "read", "prefix": "a//b"},
    {"space": "ENG", "access": "read", "prefix": "/OPS"},
    {"space": "ENG", "access": "read", "prefix": "${aws:username}"},
    {"space": "ENG", "access": "read", "prefix": 'a","Resource":"arn:aws:s3:::*'},
    {"space": "ENG", "access": "read", "prefix": "a\u0000b"},
    {"space": "ENG", "access": "read", "prefix": "x" * 600},
    {"space": "ENG*", "access": "read"},
    {"space": "ENG", "access": "admin"},
    {"space": "ENG", "access": "read", "ttl_seconds": "900"},
    {"space": "ENG", "access": "read", "ttl_seconds": True},
    {"space": "ENG", "access": "read", "ttl_seconds": -1},
    {"space": "ENG", "access": "read", "bucket": OTHER_BUCKET},
    {"space": "ENG", "access": "read", "reason": "line\nbreak"},
    {"access": "read"},
    {"space": ["ENG"], "access": "read"},
]


@pytest.mark.parametrize("body", HOSTILE_BODIES)
async def test_hostile_bodies_are_refused_with_400(broker: Harness, body: dict[str, Any]) -> None:
    response = await broker.vend("eng-writer", body)
    payload = await response.json()
    assert response.status == 400, payload
    assert set(payload["error"]) == {"code", "message"}
    # The broker keeps serving.
    assert (await broker.vend("eng-writer", {"space": "ENG", "access": "read"})).status == 201


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "invalid_json"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
        (b'{"space": "ENG", "access": "read"}', "text/plain", 415, "unsupported_media_type"),
        (
            b'{"space": "ENG", "access": "read", "reason": "' + b"x" * 40000 + b'"}',
            "application/json",
            413,
            "body_too_large",
        ),
    ],
)
async def test_malformed_requests_get_json_errors(
    broker: Harness, data: bytes, content_type: str, status: int, code: str
) -> None:
    response = await broker.client.post(
        "/v1/credentials",
        data=data,
        headers={
            "Authorization": f"Bearer {broker.tokens['eng-writer']}",
            "Content-Type": content_type,
        },
    )
    assert response.status == status
    assert (await response.json())["error"]["code"] == code


async def test_unknown_routes_and_methods_get_json_errors(broker: Harness) -> None:
    assert (await broker.client.get("/v1/nope")).status == 404
    response = await broker.client.get("/v1/credentials")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_health_and_readiness(broker: Harness) -> None:
    assert (await broker.client.get("/healthz")).status == 200
    response = await broker.client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert body["checks"]["secret_store"]["ok"] and body["checks"]["object_store"]["ok"]


async def test_service_keys_are_read_at_call_time(broker: Harness) -> None:
    assert (await broker.vend("eng-writer", {"space": "ENG", "access": "read"})).status == 201
    await broker.store.write(
        SERVICE_PATH, {"access_key_id": "NOTAKEY", "secret_access_key": "nope"}, cas=None
    )
    response = await broker.vend("eng-writer", {"space": "ENG", "access": "read"})
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "object_store_rejected"
    await broker.store.write(
        SERVICE_PATH,
        {
            "access_key_id": broker.rgw.broker_access_key,
            "secret_access_key": broker.rgw.broker_secret_key,
        },
        cas=None,
    )
    assert (await broker.vend("eng-writer", {"space": "ENG", "access": "read"})).status == 201


async def test_cached_key_rotated_away_is_noticed_without_an_error(
    rgw: Any, buckets: Any, tmp_path: Any
) -> None:
    from tests.integration.conftest import start_broker

    async for harness in start_broker(rgw, tmp_path, secret_cache_seconds=300):
        assert (await harness.vend("eng-writer", {"space": "ENG", "access": "read"})).status == 201
        admin = _RGWAdmin(
            access_key=rgw.admin_access_key,
            secret_key=rgw.admin_secret_key,
            server=rgw.endpoint.split("://", 1)[1],
            secure=False,
        )
        new = admin.create_key(uid=rgw.broker_uid, generate_key=True)
        new_key = next(k for k in new if k["access_key"] != rgw.broker_access_key)
        await harness.store.write(
            SERVICE_PATH,
            {"access_key_id": new_key["access_key"], "secret_access_key": new_key["secret_key"]},
            cas=None,
        )
        admin.remove_key(access_key=rgw.broker_access_key, uid=rgw.broker_uid)
        try:
            # The cache still holds the removed key: RGW rejects it, the broker re-reads, once.
            response = await harness.vend("eng-writer", {"space": "ENG", "access": "read"})
            assert response.status == 201, await response.text()
        finally:
            admin.create_key(
                uid=rgw.broker_uid,
                access_key=rgw.broker_access_key,
                secret_key=rgw.broker_secret_key,
            )
            admin.remove_key(access_key=new_key["access_key"], uid=rgw.broker_uid)


async def test_no_secret_reaches_logs_audit_or_errors(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = await vended(broker, "eng-writer", space="ENG", access="write", reason="nightly export")
    await broker.vend("eng-writer", {"space": "ENG", "access": "read", "prefix": "../x"})
    await broker.store.write(
        SERVICE_PATH, {"access_key_id": "AKBAD", "secret_access_key": "bad-secret-value"}, cas=None
    )
    failed = await broker.vend("eng-writer", {"space": "ENG", "access": "read"})
    error_text = await failed.text()

    audit = broker.audit_path.read_text()
    records = [json.loads(line) for line in audit.splitlines()]
    granted = next(r for r in records if r["event"] == "vend")
    assert granted["reason"] == "nightly export"
    assert granted["access_key_id"] == body["accessKeyId"]
    assert any(r["event"] == "denied" and r["code"] == "invalid_prefix" for r in records)
    secrets = [
        body["secretAccessKey"],
        body["sessionToken"],
        broker.rgw.broker_secret_key,
        "bad-secret-value",
        *broker.tokens.values(),
    ]
    for secret in secrets:
        assert secret not in audit
        assert secret not in caplog.text
        assert secret not in error_text


async def test_answers_holding_a_secret_are_json_and_never_cached(broker: Harness) -> None:
    vend = await broker.vend("eng-reader", {"space": "ENG", "access": "read"})
    presign = await broker.client.post(
        "/v1/presign",
        json={"space": "ENG", "key": "report.txt", "method": "GET"},
        headers={"Authorization": f"Bearer {broker.tokens['eng-reader']}"},
    )
    for response in (vend, presign):
        assert response.status == 201, await response.text()
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-store"
        assert isinstance(await response.json(), dict)
