"""AWS Signature Version 4 for the one request the vend path sends: an STS form POST to "/".

Why not botocore's `SigV4Auth` here (presigned URLs still use botocore): on the hot path it
cost about 85 us a call (an `AWSRequest`, `email.message` headers, four HMACs to derive the
signing key), two fifths of everything the broker adds to an AssumeRole. This signs a fixed
shape (three signed headers, no query string, path "/") and derives the signing key once per
key, UTC day, region and service, which is all that key depends on. It is about 6 us.
tests/unit/test_sigv4.py proves the Authorization header equal to botocore's for any body,
key, endpoint and time, so the two cannot drift apart silently.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import urlsplit

from credbroker.domain import AccessKey

ALGORITHM = "AWS4-HMAC-SHA256"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
_SIGNED_HEADERS = "content-type;host;x-amz-date"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Signing keys kept: one per parent key and day in use (a rotation briefly has two keys).
_CACHE_LIMIT = 8


def host_header(endpoint: str) -> str:
    """The Host value SigV4 signs, as botocore derives it: lower case, no userinfo, the port
    only when it is not the scheme's default, IPv6 in brackets."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


class FormPostSigner:
    """Signs `POST /` with a form body for one endpoint, region and service."""

    def __init__(self, *, endpoint: str, region: str, service: str) -> None:
        self._host = host_header(endpoint)
        self._region = region
        self._service = service
        self._keys: dict[tuple[str, str, str], bytes] = {}

    def headers(self, key: AccessKey, body: bytes, now: datetime | None = None) -> dict[str, str]:
        """The headers to send with `body`: Content-Type, X-Amz-Date and Authorization."""
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        stamp = moment.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        canonical = (
            "POST\n/\n\n"
            f"content-type:{FORM_CONTENT_TYPE}\nhost:{self._host}\nx-amz-date:{stamp}\n\n"
            f"{_SIGNED_HEADERS}\n{hashlib.sha256(body).hexdigest()}"
        )
        to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{_sha256_hex(canonical)}"
        signature = hmac.new(
            self._signing_key(key, day), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        return {
            "Content-Type": FORM_CONTENT_TYPE,
            "X-Amz-Date": stamp,
            "Authorization": (
                f"{ALGORITHM} Credential={key.access_key_id}/{scope}, "
                f"SignedHeaders={_SIGNED_HEADERS}, Signature={signature}"
            ),
        }

    def _signing_key(self, key: AccessKey, day: str) -> bytes:
        # The secret is part of the cache key (not only the id): a key id whose secret changed
        # (a MinIO user pair reuses ids) never signs with the old secret's derived key.
        cache_key = (key.access_key_id, key.secret_access_key, day)
        derived = self._keys.get(cache_key)
        if derived is None:
            derived = _hmac(f"AWS4{key.secret_access_key}".encode(), day)
            for part in (self._region, self._service, "aws4_request"):
                derived = _hmac(derived, part)
            if len(self._keys) >= _CACHE_LIMIT:
                self._keys.clear()
            self._keys[cache_key] = derived
        return derived


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
