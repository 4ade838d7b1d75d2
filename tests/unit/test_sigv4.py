"""The vend path's own SigV4 signer (objectstore/sigv4.py) signs exactly as botocore does.

botocore's SigV4Auth is the reference: for any form body, key, region, endpoint and moment, the
headers our signer produces are the headers botocore puts on the same request.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from credbroker.domain import AccessKey
from credbroker.objectstore.sigv4 import FORM_CONTENT_TYPE, FormPostSigner, host_header

_ID = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0234567", min_size=3, max_size=32)
_SECRET = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)
_MOMENT = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)
_ENDPOINT = st.sampled_from(
    [
        "http://127.0.0.1:7480",
        "http://127.0.0.1:80",
        "https://S3.Example.COM",
        "https://s3.example.com:443",
        "https://s3.example.com:9000",
        "http://[::1]:9000",
        "https://user@minio.internal:9443",
    ]
)
_REGION = st.sampled_from(["us-east-1", "eu-central-1", "default", ""])


def _botocore_headers(
    endpoint: str, region: str, key: AccessKey, body: bytes, moment: datetime
) -> dict[str, str]:
    request = AWSRequest(
        method="POST",
        url=endpoint.rstrip("/") + "/",
        data=body,
        headers={"Content-Type": FORM_CONTENT_TYPE},
    )
    naive = moment.astimezone(UTC).replace(tzinfo=None)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=naive):
        SigV4Auth(Credentials(key.access_key_id, key.secret_access_key), "sts", region).add_auth(
            request
        )
    return dict(request.headers.items())


@settings(max_examples=300, deadline=None)
@given(
    endpoint=_ENDPOINT,
    region=_REGION,
    key_id=_ID,
    secret=_SECRET,
    body=st.binary(max_size=4096),
    moment=_MOMENT,
)
def test_headers_equal_botocores(
    endpoint: str, region: str, key_id: str, secret: str, body: bytes, moment: datetime
) -> None:
    key = AccessKey(key_id, secret)
    signer = FormPostSigner(endpoint=endpoint, region=region, service="sts")
    assert signer.headers(key, body, moment) == _botocore_headers(
        endpoint, region, key, body, moment
    )


def test_cached_signing_key_follows_the_day_and_the_secret() -> None:
    """The derived key is reused within a day; a new day or a new secret under the same key id
    (a MinIO user pair keeps its ids) signs with a freshly derived key, as botocore would."""
    endpoint, body = "http://127.0.0.1:7480", b"Action=AssumeRole"
    signer = FormPostSigner(endpoint=endpoint, region="us-east-1", service="sts")
    day = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    old, new = AccessKey("PAIRKEY1", "old-secret"), AccessKey("PAIRKEY1", "new-secret")
    for key, moment in [
        (old, day),
        (old, day + timedelta(seconds=1)),  # the next UTC day
        (new, day + timedelta(seconds=2)),
        (old, day),  # back to a cached one
    ]:
        expected = _botocore_headers(endpoint, "us-east-1", key, body, moment)
        assert signer.headers(key, body, moment) == expected


def test_many_keys_keep_the_cache_small_and_correct() -> None:
    signer = FormPostSigner(endpoint="http://127.0.0.1:7480", region="r", service="sts")
    moment = datetime(2026, 11, 30, 12, tzinfo=UTC)
    for n in range(40):
        key = AccessKey(f"KEY{n}", f"secret-{n}")
        assert signer.headers(key, b"x", moment) == _botocore_headers(
            "http://127.0.0.1:7480", "r", key, b"x", moment
        )
    assert len(signer._keys) <= 8


def test_host_header_drops_default_ports_and_userinfo() -> None:
    assert host_header("https://user:pw@Minio.Example:443") == "minio.example"
    assert host_header("http://127.0.0.1:7480") == "127.0.0.1:7480"
    assert host_header("http://[::1]:80") == "[::1]"
