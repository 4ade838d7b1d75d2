"""The `rgw` fixture works, and Ceph RGW 16 enforces what credbroker relies on.

Every request is built and SigV4-signed by botocore itself. Each test pins down one RGW
behaviour (found on ceph 16.2.15, Debian 12) that the broker's policy builder and STS issuer
must live with. Not tested here because it kills the shared gateway: a session policy whose
Resource ARN is ~1.6k characters long crashes radosgw during AssumeRole (see scripts/rgw-dev.sh).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError, ParamValidationError

from support.rgw_server import RgwServer, botocore_client, create_bucket

pytestmark = pytest.mark.rgw

Policy = dict[str, Any]
MakeClient = Callable[..., Any]
SessionS3 = Callable[[Policy | None], Any]


def compact(policy: Policy) -> str:
    return json.dumps(policy, separators=(",", ":"))


def allow(actions: list[str], resources: list[str], condition: Policy | None = None) -> Policy:
    statement: Policy = {"Effect": "Allow", "Action": actions, "Resource": resources}
    if condition is not None:
        statement["Condition"] = condition
    return statement


def deny(actions: list[str], resources: list[str], condition: Policy | None = None) -> Policy:
    return {**allow(actions, resources, condition), "Effect": "Deny"}


def policy(*statements: Policy) -> Policy:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def s3_error(call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    return str(info.value.response["Error"]["Code"])


def sts_error(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, str]:
    """(HTTP status, error code) of a failing STS call; see test_sts_error_shape."""
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    response = info.value.response
    code = response.get("Error", {}).get("Code") or response.get("Code")
    return response["ResponseMetadata"]["HTTPStatusCode"], str(code)


@dataclass(frozen=True)
class Buckets:
    main: str  # admin-owned, plain CreateBucket; holds a/x and b/x
    other: str  # admin-owned, plain CreateBucket; holds a/x
    prepared: str  # admin-owned, made by rgw_server.create_bucket (policy + public access block)


@pytest.fixture(scope="module")
def buckets(rgw: RgwServer, s3_admin: Any) -> Buckets:
    tag = uuid.uuid4().hex[:8]
    made = Buckets(f"cbt-{tag}-main", f"cbt-{tag}-other", f"cbt-{tag}-prepared")
    s3_admin.create_bucket(Bucket=made.main)
    s3_admin.create_bucket(Bucket=made.other)
    create_bucket(s3_admin, rgw, made.prepared)
    for bucket, key in [(made.main, "a/x"), (made.main, "b/x"), (made.other, "a/x")]:
        s3_admin.put_object(Bucket=bucket, Key=key, Body=f"{bucket}/{key}".encode())
    return made


@pytest.fixture
def make_client(rgw: RgwServer) -> Iterator[MakeClient]:
    """make_client(service, access_key, secret_key, token=None, **kw) -> botocore client."""
    made: list[Any] = []

    def make(
        service: str, access_key: str, secret_key: str, token: str | None = None, **kw: Any
    ) -> Any:
        client = botocore_client(rgw, service, access_key, secret_key, token, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def broker_sts(rgw: RgwServer, make_client: MakeClient) -> Any:
    return make_client("sts", rgw.broker_access_key, rgw.broker_secret_key)


@pytest.fixture
def readonly_sts(rgw: RgwServer, make_client: MakeClient) -> Any:
    return make_client("sts", rgw.readonly_access_key, rgw.readonly_secret_key)


def assume(sts: Any, role_arn: str, session_policy: Policy | None = None, **kwargs: Any) -> Any:
    args = {"RoleArn": role_arn, "RoleSessionName": "credbroker-test", **kwargs}
    if session_policy is not None:
        args["Policy"] = compact(session_policy)
    return sts.assume_role(**args)["Credentials"]


def s3_for(make_client: MakeClient, creds: dict[str, Any]) -> Any:
    return make_client("s3", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])


@pytest.fixture
def session_s3(rgw: RgwServer, make_client: MakeClient, broker_sts: Any) -> SessionS3:
    """S3 client on a credbroker-vend session of the broker user, narrowed by a session policy."""

    def make(session_policy: Policy | None) -> Any:
        return s3_for(make_client, assume(broker_sts, rgw.vend_role_arn, session_policy))

    return make


def keys(listing: dict[str, Any]) -> list[str]:
    return [item["Key"] for item in listing.get("Contents", [])]


def body(response: dict[str, Any]) -> bytes:
    data: bytes = response["Body"].read()
    return data


# ---------------------------------------------------------------- the fixture itself


def test_fixture_describes_a_running_rgw(
    rgw: RgwServer, s3_admin: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rgw.endpoint.startswith("http://127.0.0.1:")
    assert rgw.region == "default"
    assert rgw.vend_role_arn == "arn:aws:iam:::role/credbroker-vend"
    assert rgw.read_role_arn == "arn:aws:iam:::role/credbroker-read"
    assert (rgw.dir / "env").is_file()
    assert "Buckets" in s3_admin.list_buckets()
    with capsys.disabled():
        how = "started for this session" if rgw.owned else "reused"
        print(f"\n[rgw] {rgw.endpoint} ({how}): boot took {rgw.boot_seconds:.1f}s, dir {rgw.dir}")


def test_region_default_is_the_only_location_constraint(
    rgw: RgwServer, buckets: Buckets, make_client: MakeClient, s3_admin: Any
) -> None:
    # RGW checks the SigV4 signature for whatever region the client signed with.
    for region in ("default", "us-east-1", "eu-nowhere-9"):
        s3 = make_client("s3", rgw.admin_access_key, rgw.admin_secret_key, region=region)
        assert "Buckets" in s3.list_buckets()
    # ... but "default" (the zonegroup's api name) is its only location.
    assert s3_admin.get_bucket_location(Bucket=buckets.main)["LocationConstraint"] == "default"
    code = s3_error(
        s3_admin.create_bucket,
        Bucket=f"cbt-{uuid.uuid4().hex[:8]}-loc",
        CreateBucketConfiguration={"LocationConstraint": "us-east-1"},
    )
    assert code == "InvalidLocationConstraint"


# ---------------------------------------------------------------- (a) read-scoped session


def test_read_session_is_confined_to_its_prefix(buckets: Buckets, session_s3: SessionS3) -> None:
    b = buckets.main
    s3 = session_s3(
        policy(
            allow(["s3:GetObject"], [f"arn:aws:s3:::{b}/a/*"]),
            allow(
                ["s3:ListBucket"],
                [f"arn:aws:s3:::{b}"],
                {"StringLike": {"s3:prefix": ["a/*"]}},
            ),
        )
    )
    assert body(s3.get_object(Bucket=b, Key="a/x")) == f"{b}/a/x".encode()
    assert s3_error(s3.get_object, Bucket=b, Key="b/x") == "AccessDenied"
    assert s3_error(s3.get_object, Bucket=buckets.other, Key="a/x") == "AccessDenied"
    assert s3_error(s3.put_object, Bucket=b, Key="a/new", Body=b"n") == "AccessDenied"

    # The s3:prefix condition in a session policy is enforced, for ListObjects v2 and v1.
    assert keys(s3.list_objects_v2(Bucket=b, Prefix="a/")) == ["a/x"]
    assert keys(s3.list_objects(Bucket=b, Prefix="a/")) == ["a/x"]
    assert s3_error(s3.list_objects_v2, Bucket=b) == "AccessDenied"
    assert s3_error(s3.list_objects_v2, Bucket=b, Prefix="b/") == "AccessDenied"
    assert s3_error(s3.list_objects, Bucket=b, Prefix="b/") == "AccessDenied"
    # "a" does not match "a/*": a prefix without its slash is refused, not silently widened.
    assert s3_error(s3.list_objects_v2, Bucket=b, Prefix="a") == "AccessDenied"


def test_string_equals_on_s3_prefix(buckets: Buckets, session_s3: SessionS3) -> None:
    b = buckets.main
    s3 = session_s3(
        policy(
            allow(["s3:ListBucket"], [f"arn:aws:s3:::{b}"], {"StringEquals": {"s3:prefix": ["a/"]}})
        )
    )
    assert keys(s3.list_objects_v2(Bucket=b, Prefix="a/")) == ["a/x"]
    assert s3_error(s3.list_objects_v2, Bucket=b, Prefix="a/x") == "AccessDenied"
    assert s3_error(s3.list_objects_v2, Bucket=b) == "AccessDenied"


# ---------------------------------------------------------------- (b) write-scoped session


def test_write_session_writes_and_deletes_only_under_its_prefix(
    buckets: Buckets, session_s3: SessionS3, s3_admin: Any
) -> None:
    b = buckets.main
    s3 = session_s3(policy(allow(["s3:PutObject", "s3:DeleteObject"], [f"arn:aws:s3:::{b}/a/*"])))
    s3.put_object(Bucket=b, Key="a/w", Body=b"w")
    # (the admin may list but not read it: see test_objects_written_by_sessions_...)
    assert keys(s3_admin.list_objects_v2(Bucket=b, Prefix="a/")) == ["a/w", "a/x"]
    s3.delete_object(Bucket=b, Key="a/w")
    assert keys(s3_admin.list_objects_v2(Bucket=b, Prefix="a/")) == ["a/x"]

    assert s3_error(s3.put_object, Bucket=b, Key="b/w", Body=b"w") == "AccessDenied"
    assert s3_error(s3.delete_object, Bucket=b, Key="b/x") == "AccessDenied"
    assert s3_error(s3.put_object, Bucket=buckets.other, Key="a/w", Body=b"w") == "AccessDenied"
    assert s3_error(s3.get_object, Bucket=b, Key="a/x") == "AccessDenied"
    assert body(s3_admin.get_object(Bucket=b, Key="b/x")) == f"{b}/b/x".encode()


# ---------------------------------------------------------------- (c) DurationSeconds


def test_duration_900_is_accepted_and_honoured(rgw: RgwServer, broker_sts: Any) -> None:
    before = datetime.now(UTC)
    creds = assume(broker_sts, rgw.vend_role_arn, DurationSeconds=900)
    lifetime = creds["Expiration"] - before
    assert timedelta(seconds=890) <= lifetime <= timedelta(seconds=910), lifetime


def test_duration_bounds(rgw: RgwServer, broker_sts: Any, make_client: MakeClient) -> None:
    # Upper bound: the role's MaxSessionDuration (3600 by default), not rgw_sts_max_session_duration
    # (43200). Above it RGW answers 400 InvalidArgument (log: "Incorrect value of duration").
    assume(broker_sts, rgw.vend_role_arn, DurationSeconds=3600)
    for too_long in (3601, 43200, 604800, 10**9):
        assert sts_error(assume, broker_sts, rgw.vend_role_arn, DurationSeconds=too_long) == (
            400,
            "InvalidArgument",
        ), too_long
    # Below 900 botocore refuses before sending; RGW itself also answers 400 InvalidArgument.
    with pytest.raises(ParamValidationError):
        assume(broker_sts, rgw.vend_role_arn, DurationSeconds=899)
    raw = make_client(
        "sts", rgw.broker_access_key, rgw.broker_secret_key, parameter_validation=False
    )
    for too_short in (899, 1, 0):
        assert sts_error(assume, raw, rgw.vend_role_arn, DurationSeconds=too_short) == (
            400,
            "InvalidArgument",
        ), too_short


# ---------------------------------------------------------------- (d) read-only role


def test_read_role_cannot_write_even_with_a_permissive_session_policy(
    rgw: RgwServer, buckets: Buckets, readonly_sts: Any, make_client: MakeClient
) -> None:
    b = buckets.main
    creds = assume(readonly_sts, rgw.read_role_arn, policy(allow(["s3:*"], ["arn:aws:s3:::*"])))
    s3 = s3_for(make_client, creds)
    assert body(s3.get_object(Bucket=b, Key="a/x")) == f"{b}/a/x".encode()
    assert keys(s3.list_objects_v2(Bucket=b)) == ["a/x", "b/x"]
    assert s3.get_bucket_location(Bucket=b)["LocationConstraint"] == "default"
    assert s3_error(s3.put_object, Bucket=b, Key="a/ro", Body=b"w") == "AccessDenied"
    assert s3_error(s3.delete_object, Bucket=b, Key="a/x") == "AccessDenied"
    assert s3_error(s3.create_multipart_upload, Bucket=b, Key="a/ro") == "AccessDenied"
    assert s3_error(s3.create_bucket, Bucket=f"cbt-{uuid.uuid4().hex[:8]}-ro") == "AccessDenied"


def test_trust_policies_bind_each_role_to_its_parent(
    rgw: RgwServer, broker_sts: Any, readonly_sts: Any
) -> None:
    assert sts_error(assume, broker_sts, rgw.read_role_arn) == (403, "AccessDenied")
    assert sts_error(assume, readonly_sts, rgw.vend_role_arn) == (403, "AccessDenied")
    missing = "arn:aws:iam:::role/credbroker-missing"
    assert sts_error(assume, broker_sts, missing) == (404, "NoSuchEntity")


def test_session_without_session_policy_has_the_whole_role(
    rgw: RgwServer, buckets: Buckets, session_s3: SessionS3
) -> None:
    # Nothing narrows it: the broker must always send a session policy.
    s3 = session_s3(None)
    assert body(s3.get_object(Bucket=buckets.other, Key="a/x")) == f"{buckets.other}/a/x".encode()
    name = f"cbt-{uuid.uuid4().hex[:8]}-sess"
    s3.create_bucket(Bucket=name)  # owned by the broker user, not by the admin
    s3.delete_bucket(Bucket=name)


# ---------------------------------------------------------------- STS request and answer shapes


def test_session_policy_must_be_compact_and_at_most_2048_chars(
    rgw: RgwServer, buckets: Buckets, broker_sts: Any
) -> None:
    readable = policy(allow(["s3:GetObject"], [f"arn:aws:s3:::{buckets.main}/a/*"]))
    assume(broker_sts, rgw.vend_role_arn, readable)
    # json.dumps' default ", " / ": " separators: the form body carries '+' and RGW 16 fails.
    spaced = {"RoleArn": rgw.vend_role_arn, "RoleSessionName": "credbroker-test"}
    assert sts_error(broker_sts.assume_role, **spaced, Policy=json.dumps(readable)) == (
        400,
        "MalformedPolicyDocument",
    )
    unknown = policy(allow(["s3:NoSuchAction"], ["arn:aws:s3:::*"]))
    assert sts_error(assume, broker_sts, rgw.vend_role_arn, unknown) == (
        400,
        "MalformedPolicyDocument",
    )
    # Many short statements (long Resource strings crash RGW 16, see the module docstring).
    big = policy(*(allow(["s3:GetObject"], [f"arn:aws:s3:::b{i:03d}/p/*"]) for i in range(30)))
    assert len(compact(big)) > 2048
    assert sts_error(assume, broker_sts, rgw.vend_role_arn, big) == (400, "PackedPolicyTooLarge")


def test_sts_error_shape(rgw: RgwServer, broker_sts: Any) -> None:
    # RGW answers STS errors S3-style (<Error><Code>..</Code></Error>, no <ErrorResponse>), so
    # botocore has no response["Error"]: the code sits at the top level and str(exc) says
    # "(Unknown)". The STS issuer must read both places.
    with pytest.raises(ClientError) as info:
        assume(broker_sts, rgw.read_role_arn)
    response = info.value.response
    assert "Error" not in response
    assert response["Code"] == "AccessDenied"
    assert "(Unknown)" in str(info.value)


def test_expiration_has_nanoseconds_and_botocore_parses_it(rgw: RgwServer, broker_sts: Any) -> None:
    raw: list[bytes] = []

    def grab(http_response: Any, **_: Any) -> None:
        raw.append(http_response.content)

    broker_sts.meta.events.register("after-call.sts.AssumeRole", grab)
    creds = assume(broker_sts, rgw.vend_role_arn)
    stamp = re.search(rb"<Expiration>([^<]+)</Expiration>", raw[0])
    assert stamp is not None
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", stamp.group(1)), stamp
    assert creds["Expiration"].tzinfo is not None


# ---------------------------------------------------------------- multipart actions


def test_multipart_actions_in_session_policies(
    buckets: Buckets, session_s3: SessionS3, s3_admin: Any
) -> None:
    b = buckets.main
    obj = f"arn:aws:s3:::{b}/a/*"
    upload = s3_admin.create_multipart_upload(Bucket=b, Key="a/mp")["UploadId"]
    other = s3_admin.create_multipart_upload(Bucket=b, Key="b/mp")["UploadId"]
    try:
        # ListMultipartUploadParts and ListBucketMultipartUploads are enforced by their names.
        parts = session_s3(policy(allow(["s3:ListMultipartUploadParts"], [obj])))
        parts.list_parts(Bucket=b, Key="a/mp", UploadId=upload)
        assert s3_error(parts.list_parts, Bucket=b, Key="b/mp", UploadId=other) == "AccessDenied"
        assert s3_error(parts.list_multipart_uploads, Bucket=b) == "AccessDenied"

        # ListBucketMultipartUploads is bucket-wide: it shows keys outside the prefix, and an
        # s3:prefix condition on it is never satisfied (RGW 16 sets no s3:prefix for it).
        uploads = session_s3(
            policy(allow(["s3:ListBucketMultipartUploads"], [f"arn:aws:s3:::{b}"]))
        )
        listed = uploads.list_multipart_uploads(Bucket=b)["Uploads"]
        assert {u["Key"] for u in listed} >= {"a/mp", "b/mp"}
        conditioned = session_s3(
            policy(
                allow(
                    ["s3:ListBucketMultipartUploads"],
                    [f"arn:aws:s3:::{b}"],
                    {"StringLike": {"s3:prefix": ["a/*"]}},
                )
            )
        )
        denied = s3_error(conditioned.list_multipart_uploads, Bucket=b, Prefix="a/")
        assert denied == "AccessDenied"

        # AbortMultipartUpload is authorised as s3:PutObject: the PutObject grant allows it,
        # an explicit s3:AbortMultipartUpload grant does not, a Deny on it changes nothing.
        only_abort = session_s3(policy(allow(["s3:AbortMultipartUpload"], [obj])))
        code = s3_error(only_abort.abort_multipart_upload, Bucket=b, Key="a/mp", UploadId=upload)
        assert code == "AccessDenied"
        put_but_no_abort = session_s3(
            policy(allow(["s3:PutObject"], [obj]), deny(["s3:AbortMultipartUpload"], [obj]))
        )
        put_but_no_abort.abort_multipart_upload(Bucket=b, Key="a/mp", UploadId=upload)
        remaining = s3_admin.list_multipart_uploads(Bucket=b).get("Uploads", [])
        assert upload not in {u["UploadId"] for u in remaining}
    finally:
        for key, upload_id in (("a/mp", upload), ("b/mp", other)):
            try:
                s3_admin.abort_multipart_upload(Bucket=b, Key=key, UploadId=upload_id)
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "NoSuchUpload"


# ---------------------------------------------------------------- bucket setup


def test_objects_written_by_sessions_belong_to_the_parent_user(
    rgw: RgwServer, buckets: Buckets, session_s3: SessionS3, s3_admin: Any
) -> None:
    # Role sessions reach admin-owned buckets through role + session policy alone (no bucket
    # policy needed), but what they write is owned by the broker user: on a plain bucket the
    # admin (bucket owner) cannot read it, only delete it.
    writer = session_s3(policy(allow(["s3:PutObject"], ["arn:aws:s3:::*/owned/*"])))
    writer.put_object(Bucket=buckets.main, Key="owned/plain", Body=b"p")
    assert s3_error(s3_admin.get_object, Bucket=buckets.main, Key="owned/plain") == "AccessDenied"
    writer.put_object(
        Bucket=buckets.main, Key="owned/bofc", Body=b"p", ACL="bucket-owner-full-control"
    )
    assert body(s3_admin.get_object(Bucket=buckets.main, Key="owned/bofc")) == b"p"
    s3_admin.delete_object(Bucket=buckets.main, Key="owned/plain")
    s3_admin.delete_object(Bucket=buckets.main, Key="owned/bofc")
    # rgw_server.create_bucket's bucket policy lets the admin read whatever sessions write.
    writer.put_object(Bucket=buckets.prepared, Key="owned/plain", Body=b"p")
    assert body(s3_admin.get_object(Bucket=buckets.prepared, Key="owned/plain")) == b"p"


def test_put_only_session_can_publish_unless_public_acls_are_ignored(
    rgw: RgwServer, buckets: Buckets, session_s3: SessionS3, make_client: MakeClient
) -> None:
    anonymous = make_client("s3", "unused", "unused", signature_version=UNSIGNED)
    everyone = 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'
    put_only = policy(
        allow(["s3:PutObject"], ["arn:aws:s3:::*/pub/*"]),
        deny(
            ["s3:PutObject"],
            ["arn:aws:s3:::*"],
            {"StringEquals": {"s3:x-amz-acl": ["public-read", "public-read-write"]}},
        ),
    )
    s3 = session_s3(put_only)
    # Plain bucket: the s3:x-amz-acl condition is enforced, but x-amz-grant-read walks past it
    # (RGW 16 does not ask for s3:PutObjectAcl on PutObject) and the object becomes public.
    assert (
        s3_error(s3.put_object, Bucket=buckets.main, Key="pub/1", Body=b"p", ACL="public-read")
        == "AccessDenied"
    )
    s3.put_object(Bucket=buckets.main, Key="pub/2", Body=b"p", GrantRead=everyone)
    assert body(anonymous.get_object(Bucket=buckets.main, Key="pub/2")) == b"p"
    # rgw_server.create_bucket sets IgnorePublicAcls: the grant is accepted and has no effect.
    s3.put_object(Bucket=buckets.prepared, Key="pub/2", Body=b"p", GrantRead=everyone)
    assert s3_error(anonymous.get_object, Bucket=buckets.prepared, Key="pub/2") == "AccessDenied"


def test_block_public_acls_refuses_every_put(rgw: RgwServer, s3_admin: Any) -> None:
    # Why rgw_server.create_bucket leaves BlockPublicAcls off: on RGW 16 it refuses even a
    # private PutObject by the bucket owner.
    name = f"cbt-{uuid.uuid4().hex[:8]}-bpa"
    s3_admin.create_bucket(Bucket=name)
    s3_admin.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": False,
            "BlockPublicPolicy": False,
            "RestrictPublicBuckets": False,
        },
    )
    try:
        assert s3_error(s3_admin.put_object, Bucket=name, Key="k", Body=b"x") == "AccessDenied"
    finally:
        s3_admin.delete_bucket(Bucket=name)
