"""The MinIO double over HTTP, signed by botocore as a real client signs: what MinIO answers
to STS keys, presigned URLs and session policies (each answer's source is named in
tests/doubles/minio_admin.py)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.doubles.minio_admin import MinioAdminDouble
from tests.doubles.minio_policy import PolicyError

USER, SECRET = "credbroker-a", "credbroker-a-secret-0123456789"
BUCKET = "confluence-exports"
PARENT_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:*"],
            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
        }
    ],
}


def scoped(*actions: str, uploads: bool = False) -> dict[str, Any]:
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": list(actions), "Resource": [f"arn:aws:s3:::{BUCKET}/ENG/*"]},
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{BUCKET}"],
            "Condition": {"StringLike": {"s3:prefix": ["ENG/*"]}},
        },
    ]
    if uploads:
        statements.append(
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucketMultipartUploads"],
                "Resource": [f"arn:aws:s3:::{BUCKET}"],
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


@dataclass
class Answer:
    status: int
    text: str

    @property
    def code(self) -> str:
        found = re.search(r"<Code>([^<]*)</Code>", self.text)
        return found.group(1) if found else ""

    @property
    def message(self) -> str:
        found = re.search(r"<Message>([^<]*)</Message>", self.text)
        return found.group(1) if found else ""

    def tag(self, name: str) -> str:
        found = re.search(f"<{name}>([^<]*)</{name}>", self.text)
        return found.group(1) if found else ""


class Client:
    def __init__(self, minio: MinioAdminDouble, http: aiohttp.ClientSession) -> None:
        self.minio, self.http = minio, http

    async def send(
        self, method: str, url: str, headers: dict[str, str], data: bytes = b""
    ) -> Answer:
        async with self.http.request(method, url, headers=headers, data=data) as response:
            return Answer(response.status, await response.text())

    async def assume_role(
        self, policy: dict[str, Any] | str | None, duration: int | None = 900
    ) -> Answer:
        form: dict[str, Any] = {"Action": "AssumeRole", "Version": "2011-06-15"}
        if duration is not None:
            form["DurationSeconds"] = duration
        if policy is not None:
            form["Policy"] = policy if isinstance(policy, str) else json.dumps(policy)
        body = urlencode(form).encode()
        request = AWSRequest(
            method="POST",
            url=self.minio.endpoint + "/",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
        SigV4Auth(Credentials(USER, SECRET), "sts", self.minio.region).add_auth(request)
        return await self.send("POST", request.url, dict(request.headers.items()), body)

    async def vend(self, policy: dict[str, Any] | None) -> Credentials:
        answer = await self.assume_role(policy)
        assert answer.status == 200, answer.text
        return Credentials(
            answer.tag("AccessKeyId"), answer.tag("SecretAccessKey"), answer.tag("SessionToken")
        )

    async def s3(
        self,
        method: str,
        path: str,
        key: Credentials,
        data: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        request = AWSRequest(
            method=method, url=self.minio.endpoint + path, data=data, headers=headers or {}
        )
        S3SigV4Auth(key, "s3", self.minio.region).add_auth(request)
        return await self.send(method, request.url, dict(request.headers.items()), data)

    def presign(self, method: str, path: str, key: Credentials, expires: int = 300) -> str:
        request = AWSRequest(method=method, url=self.minio.endpoint + path)
        S3SigV4QueryAuth(key, "s3", self.minio.region, expires=expires).add_auth(request)
        return str(request.url)


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    async with MinioAdminDouble() as minio, aiohttp.ClientSession() as http:
        # Clients sign with the double's clock, so advancing it ages keys, not requests.
        monkeypatch.setattr(
            botocore.auth, "get_current_datetime", lambda: minio.now().replace(tzinfo=None)
        )
        minio.add_user(USER, SECRET)
        minio.set_policy("credbroker-parent", PARENT_POLICY)
        minio.attach(USER, "credbroker-parent")
        minio.put_object(BUCKET, "ENG/page.html", b"<html>eng</html>")
        minio.put_object(BUCKET, "HR/salaries.csv", b"secret")
        yield Client(minio, http)


async def test_a_scoped_sts_key_reads_inside_its_prefix_only(client: Client) -> None:
    key = await client.vend(scoped("s3:GetObject"))

    inside = await client.s3("GET", f"/{BUCKET}/ENG/page.html", key)
    assert (inside.status, inside.text) == (200, "<html>eng</html>")
    outside = await client.s3("GET", f"/{BUCKET}/HR/salaries.csv", key)
    assert (outside.status, outside.code) == (403, "AccessDenied")
    missing = await client.s3("GET", f"/{BUCKET}/ENG/nothing", key)
    assert (missing.status, missing.code) == (404, "NoSuchKey")
    denied_missing = await client.s3("GET", f"/{BUCKET}/HR/nothing", key)
    assert (denied_missing.status, denied_missing.code) == (403, "AccessDenied")
    head = await client.s3("HEAD", f"/{BUCKET}/HR/salaries.csv", key)
    assert head.status == 403
    write = await client.s3("PUT", f"/{BUCKET}/ENG/new.html", key, b"x")
    assert (write.status, write.code) == (403, "AccessDenied")


async def test_listing_follows_the_prefix_condition(client: Client) -> None:
    key = await client.vend(scoped("s3:GetObject"))

    listed = await client.s3("GET", f"/{BUCKET}?list-type=2&prefix=ENG%2F", key)
    assert listed.status == 200, listed.text
    assert re.findall(r"<Key>([^<]*)</Key>", listed.text) == ["ENG/page.html"]
    v1 = await client.s3("GET", f"/{BUCKET}?prefix=ENG%2F", key)
    assert v1.status == 200 and "<Key>ENG/page.html</Key>" in v1.text
    for query in ("list-type=2&prefix=HR%2F", "list-type=2", "list-type=2&prefix="):
        answer = await client.s3("GET", f"/{BUCKET}?{query}", key)
        assert (answer.status, answer.code) == (403, "AccessDenied"), query
    # ListBuckets filters (ListBucket with prefix "" is not allowed here), never denies.
    buckets = await client.s3("GET", "/", key)
    assert buckets.status == 200 and "<Name>" not in buckets.text
    # The parent itself sees the bucket.
    parent = await client.s3("GET", "/", Credentials(USER, SECRET))
    assert f"<Name>{BUCKET}</Name>" in parent.text
    gone = await client.s3("GET", "/no-such-bucket?list-type=2&prefix=ENG%2F", key)
    assert (gone.status, gone.code) == (403, "AccessDenied")  # authorised before looked up


async def test_a_write_key_puts_and_deletes_and_acl_headers_change_nothing(
    client: Client,
) -> None:
    key = await client.vend(scoped("s3:GetObject", "s3:PutObject", "s3:DeleteObject"))

    put = await client.s3(
        "PUT", f"/{BUCKET}/ENG/new.html", key, b"new", {"x-amz-acl": "public-read"}
    )
    assert put.status == 200, put.text
    assert client.minio.objects(BUCKET)["ENG/new.html"] == b"new"
    assert (await client.s3("DELETE", f"/{BUCKET}/ENG/new.html", key)).status == 204
    assert (await client.s3("DELETE", f"/{BUCKET}/ENG/new.html", key)).status == 204
    assert "ENG/new.html" not in client.minio.objects(BUCKET)
    outside = await client.s3("DELETE", f"/{BUCKET}/HR/salaries.csv", key)
    assert (outside.status, outside.code) == (403, "AccessDenied")
    uploads = await client.s3("GET", f"/{BUCKET}?uploads", key)
    assert (uploads.status, uploads.code) == (403, "AccessDenied")


async def test_listing_uploads_is_authorised_as_its_own_action(client: Client) -> None:
    key = await client.vend(scoped("s3:GetObject", uploads=True))
    uploads = await client.s3("GET", f"/{BUCKET}?uploads", key)
    assert uploads.status == 200 and "<ListMultipartUploadsResult" in uploads.text


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            {
                "Version": "2012-10-17",
                "Statement": [
                    *scoped("s3:PutObject")["Statement"],
                    {
                        "Effect": "Deny",
                        "Action": ["s3:PutObject"],
                        "Resource": [f"arn:aws:s3:::{BUCKET}/ENG/*"],
                        "Condition": {"StringEquals": {"s3:x-amz-acl": ["public-read"]}},
                    },
                ],
            },
            "invalid condition key 's3:x-amz-acl'",
        ),
        (
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
                        "Resource": [f"arn:aws:s3:::{BUCKET}"],
                        "Condition": {"StringLike": {"s3:prefix": ["ENG/*"]}},
                    }
                ],
            },
            "unsupported condition keys '[s3:prefix]' used for action "
            "'s3:ListBucketMultipartUploads'",
        ),
        (
            {"Statement": scoped("s3:GetObject")["Statement"]},
            "Version cannot be empty expecting '2012-10-17'",
        ),
        (
            # 330 '&': about 480 bytes as sent, over 2,048 as Go re-marshals them (6 each).
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:GetObject"],
                        "Resource": [f"arn:aws:s3:::{BUCKET}/ENG/" + "&" * 330],
                    }
                ],
            },
            "Session policy should not exceed 2048 characters",
        ),
    ],
)
async def test_assume_role_refuses_what_minio_refuses(
    client: Client, policy: dict[str, Any], message: str
) -> None:
    answer = await client.assume_role(policy)
    assert (answer.status, answer.code, answer.message) == (400, "InvalidParameterValue", message)
    assert client.minio.sts_keys(USER) == []


async def test_duration_bounds_and_the_server_override(client: Client) -> None:
    for duration in (899, 31536001, "x"):
        answer = await client.assume_role(scoped("s3:GetObject"), duration)  # type: ignore[arg-type]
        assert (answer.status, answer.code, answer.message) == (
            400,
            "InvalidParameterValue",
            "invalid token expiry",
        )
    year = await client.assume_role(scoped("s3:GetObject"), 31536000)
    assert year.status == 200
    expiration = datetime.strptime(year.tag("Expiration"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expiration - (client.minio.now() + timedelta(days=365))) < timedelta(seconds=5)
    default = await client.assume_role(scoped("s3:GetObject"), None)
    expiration = datetime.strptime(default.tag("Expiration"), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=UTC
    )
    assert abs(expiration - (client.minio.now() + timedelta(hours=1))) < timedelta(seconds=5)

    # MINIO_STS_DURATION set on the server: DurationSeconds is ignored.
    client.minio.sts_duration_override = 7200
    answer = await client.assume_role(scoped("s3:GetObject"), 900)
    expiration = datetime.strptime(answer.tag("Expiration"), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=UTC
    )
    assert abs(expiration - (client.minio.now() + timedelta(hours=2))) < timedelta(seconds=5)
    assert (await client.assume_role(scoped("s3:GetObject"), 10**9)).status == 200
    client.minio.sts_duration_override = 600  # out of range on the server too
    assert (await client.assume_role(scoped("s3:GetObject"), 900)).message == "invalid token expiry"


async def test_an_expired_sts_key_is_an_unknown_key(client: Client) -> None:
    key = await client.vend(scoped("s3:GetObject"))
    assert (await client.s3("GET", f"/{BUCKET}/ENG/page.html", key)).status == 200

    client.minio.advance(901)

    for path in (f"/{BUCKET}/ENG/page.html", "/"):
        answer = await client.s3("GET", path, key)
        # cmd/iam.go CheckKey: an expired credential is not valid; checkKeyValid answers
        # ErrInvalidAccessKeyID, 403 (not STS's 400 ExpiredToken).
        assert (answer.status, answer.code) == (403, "InvalidAccessKeyId"), path


async def test_a_disabled_parent_lists_buckets_but_reads_nothing(client: Client) -> None:
    key = await client.vend(scoped("s3:GetObject"))
    client.minio.set_user_status(USER, enabled=False)

    assert (await client.s3("GET", "/", key)).status == 200
    answer = await client.s3("GET", f"/{BUCKET}/ENG/page.html", key)
    assert (answer.status, answer.code) == (403, "AccessDenied")


async def test_a_parent_without_policy_gets_a_key_that_can_do_nothing(client: Client) -> None:
    client.minio.add_user(USER, SECRET)  # no policy attached
    key = await client.vend(scoped("s3:GetObject"))

    assert (await client.s3("GET", "/", key)).status == 200
    answer = await client.s3("GET", f"/{BUCKET}/ENG/page.html", key)
    assert (answer.status, answer.code) == (403, "AccessDenied")


async def test_presigned_get_and_put_work_and_tampering_or_age_is_refused(client: Client) -> None:
    key = await client.vend(scoped("s3:GetObject", "s3:PutObject"))

    url = client.presign("GET", f"/{BUCKET}/ENG/page.html", key)
    got = await client.send("GET", url, {})
    assert (got.status, got.text) == (200, "<html>eng</html>")
    put_url = client.presign("PUT", f"/{BUCKET}/ENG/upload.bin", key)
    put = await client.send("PUT", put_url, {}, b"payload")
    assert put.status == 200, put.text
    assert client.minio.objects(BUCKET)["ENG/upload.bin"] == b"payload"

    tampered = url.replace("ENG/page.html", "ENG/page.htm")
    answer = await client.send("GET", tampered, {})
    assert (answer.status, answer.code) == (403, "SignatureDoesNotMatch")
    forged = re.sub(r"X-Amz-Signature=[0-9a-f]{8}", "X-Amz-Signature=00000000", url)
    assert (await client.send("GET", forged, {})).code == "SignatureDoesNotMatch"
    outside = client.presign("GET", f"/{BUCKET}/HR/salaries.csv", key)
    assert (await client.send("GET", outside, {})).code == "AccessDenied"

    client.minio.advance(301)
    expired = await client.send("GET", url, {})
    assert (expired.status, expired.code, expired.message) == (
        403,
        "AccessDenied",
        "Request has expired",
    )


async def test_named_policies_are_validated_and_must_exist_to_be_attached(
    client: Client,
) -> None:
    with pytest.raises(PolicyError, match="invalid condition key 's3:x-amz-acl'"):
        client.minio.set_policy(
            "bad",
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Action": "s3:PutObject",
                        "Resource": "arn:aws:s3:::b/*",
                        "Condition": {"StringEquals": {"s3:x-amz-acl": "public-read"}},
                    }
                ],
            },
        )
    with pytest.raises(KeyError):
        client.minio.attach(USER, "never-defined")
    # The root user may do anything, without any policy.
    root = Credentials(client.minio.root_access_key, "minioroot-secret-key")
    assert (await client.s3("GET", f"/{BUCKET}/HR/salaries.csv", root)).status == 200
