"""The MinIO double's token revocation over HTTP, signed by botocore: AssumeRole keeps
TokenRevokeType, and POST /minio/admin/v3/revoke-tokens/{provider} deletes the parent's keys of
that type, refusing what MinIO refuses (cmd/admin-handlers-users.go RevokeTokens)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.doubles.minio_admin import MinioAdminDouble
from tests.unit.doubles.test_minio_double import (
    BUCKET,
    PARENT_POLICY,
    SECRET,
    USER,
    Answer,
    Client,
    scoped,
)

ADMIN, ADMIN_SECRET = "cb-revoker", "cb-revoker-secret-0123456789"
OTHER, OTHER_SECRET = "credbroker-b", "credbroker-b-secret-0123456789"
PAGE = f"/{BUCKET}/ENG/page.html"


@pytest.fixture
async def minio(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    """As test_minio_double's `client`: one parent user, its policy, one object."""
    async with MinioAdminDouble() as double, aiohttp.ClientSession() as http:
        monkeypatch.setattr(
            botocore.auth, "get_current_datetime", lambda: double.now().replace(tzinfo=None)
        )
        double.add_user(USER, SECRET)
        double.set_policy("credbroker-parent", PARENT_POLICY)
        double.attach(USER, "credbroker-parent")
        double.put_object(BUCKET, "ENG/page.html", b"<html>eng</html>")
        yield Client(double, http)


async def vend(client: Client, revoke_type: str | None, *, user: str = USER) -> Credentials:
    form = {
        "Action": "AssumeRole",
        "Version": "2011-06-15",
        "DurationSeconds": 900,
        "Policy": json.dumps(scoped("s3:GetObject")),
    }
    if revoke_type is not None:
        form["TokenRevokeType"] = revoke_type
    body = urlencode(form).encode()
    request = AWSRequest(
        method="POST",
        url=client.minio.endpoint + "/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    secret = SECRET if user == USER else OTHER_SECRET
    SigV4Auth(Credentials(user, secret), "sts", client.minio.region).add_auth(request)
    answer = await client.send("POST", request.url, dict(request.headers.items()), body)
    assert answer.status == 200, answer.text
    return Credentials(
        answer.tag("AccessKeyId"), answer.tag("SecretAccessKey"), answer.tag("SessionToken")
    )


async def revoke(
    client: Client, signer: Credentials, provider: str = "builtin", **query: str
) -> tuple[int, str, str]:
    """(status, error Code, body) of a signed revoke-tokens call."""
    url = f"{client.minio.endpoint}/minio/admin/v3/revoke-tokens/{provider}"
    if query:
        url += "?" + urlencode(sorted(query.items()))
    request = AWSRequest(method="POST", url=url, data=b"")
    S3SigV4Auth(signer, "s3", client.minio.region).add_auth(request)
    answer = await client.send("POST", request.url, dict(request.headers.items()))
    code = json.loads(answer.text).get("Code", "") if answer.text else ""
    return answer.status, code, answer.text


async def status(client: Client, key: Credentials) -> tuple[int, str]:
    answer: Answer = await client.s3("GET", PAGE, key)
    return answer.status, answer.code


async def test_a_type_revoked_deletes_that_types_keys_of_that_parent_only(minio: Client) -> None:
    client = minio
    client.minio.add_user(ADMIN, ADMIN_SECRET, admin=True)
    client.minio.add_user(OTHER, OTHER_SECRET)
    client.minio.attach(OTHER, "credbroker-parent")
    gone, kept, untagged = [await vend(client, t) for t in ("lease-1", "lease-2", None)]
    same_type_other_parent = await vend(client, "lease-1", user=OTHER)
    assert client.minio.revoke_type_of(gone.access_key) == "lease-1"
    assert client.minio.revoke_type_of(untagged.access_key) == ""

    admin = Credentials(ADMIN, ADMIN_SECRET)
    assert await revoke(client, admin, user=USER, tokenRevokeType="lease-1") == (204, "", "")

    assert await status(client, gone) == (403, "InvalidAccessKeyId")
    for key in (kept, untagged, same_type_other_parent):
        assert await status(client, key) == (200, "")
    # Deleted, not denied: the same call again, or for a user that never existed, is 204.
    assert (await revoke(client, admin, user=USER, tokenRevokeType="lease-1"))[0] == 204
    assert (await revoke(client, admin, user="nobody", tokenRevokeType="x"))[0] == 204


async def test_full_revoke_deletes_every_sts_key_of_the_parent(minio: Client) -> None:
    client = minio
    client.minio.add_user(ADMIN, ADMIN_SECRET, admin=True)
    keys = [await vend(client, t) for t in ("a", None)]
    admin = Credentials(ADMIN, ADMIN_SECRET)
    assert (await revoke(client, admin, user=USER, fullRevoke="true"))[0] == 204
    for key in keys:
        assert await status(client, key) == (403, "InvalidAccessKeyId")
    assert client.minio.sts_keys(USER) == []


async def test_revoke_tokens_refuses_what_minio_refuses(minio: Client) -> None:
    client = minio
    client.minio.add_user(ADMIN, ADMIN_SECRET, admin=True)
    client.minio.add_user(OTHER, OTHER_SECRET)
    admin, user = Credentials(ADMIN, ADMIN_SECRET), Credentials(USER, SECRET)
    key = await vend(client, "lease-1")

    # A user with neither a type nor fullRevoke, or both: 400 InvalidRequest.
    assert (await revoke(client, admin, user=USER))[:2] == (400, "InvalidRequest")
    both = {"user": USER, "tokenRevokeType": "t", "fullRevoke": "true"}
    assert (await revoke(client, admin, **both))[:2] == (400, "InvalidRequest")
    # Another user's tokens without admin:RemoveServiceAccount: 403.
    other = Credentials(OTHER, OTHER_SECRET)
    assert (await revoke(client, other, user=USER, tokenRevokeType="lease-1"))[:2] == (
        403,
        "AccessDenied",
    )
    # No LDAP configured, and providers other than builtin/ldap: not allowed.
    for provider in ("ldap", "openid"):
        answer = await revoke(client, admin, provider, user=USER, tokenRevokeType="lease-1")
        assert answer[:2] == (403, "XMinioIAMActionNotAllowed")
    # Unsigned, or signed with a wrong secret: refused before anything.
    assert (await revoke(client, Credentials(ADMIN, "wrong-secret-0123456789"), user=USER))[:2] == (
        403,
        "SignatureDoesNotMatch",
    )
    # A user's own tokens by type need no admin right; without a type a user (not STS) has
    # none to infer: 400 InvalidArgument.
    assert (await revoke(client, user))[:2] == (400, "InvalidArgument")
    assert await status(client, key) == (200, "")
    assert (await revoke(client, user, tokenRevokeType="lease-1"))[0] == 204
    assert await status(client, key) == (403, "InvalidAccessKeyId")


async def test_an_sts_key_revokes_its_own_type_when_none_is_named(minio: Client) -> None:
    client = minio
    mine, sibling, other = [await vend(client, t) for t in ("lease-1", "lease-1", "lease-2")]
    assert (await revoke(client, mine))[0] == 204
    assert await status(client, sibling) == (403, "InvalidAccessKeyId")
    assert await status(client, other) == (200, "")
