"""STS AssumeRole against MinIO or Ceph RGW, sent by aiohttp; presigned URLs by botocore.

Why not a botocore/aiobotocore client: the parent credentials come from the secret store on
every call and change on rotation, and building a client per credential costs milliseconds.
AssumeRole is signed by objectstore/sigv4.py (proven equal to botocore's SigV4Auth, at a
fifteenth of its cost) and sent over one shared aiohttp connection pool; presigned URLs use
botocore's S3SigV4QueryAuth. The XML is parsed with defusedxml (which also copes with RGW's
nanosecond timestamps).
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from defusedxml import ElementTree

from credbroker.domain import AccessKey, SessionKey
from credbroker.errors import ObjectStoreRejected, ObjectStoreUnavailable
from credbroker.objectstore.sigv4 import FormPostSigner
from credbroker.objectstore.tls import VERIFIED, TlsPolicy

log = logging.getLogger("credbroker.objectstore.sts")

_STS_VERSION: Final = "2011-06-15"
_FRACTION = re.compile(r"\.(\d+)")


class StsIssuer:
    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        role_arn: str | None,
        public_endpoint: str | None = None,
        tls: TlsPolicy = VERIFIED,
        timeout_seconds: float = 5.0,
        max_connections: int = 64,
        tag_revoke_type: bool = False,
    ) -> None:
        """`tag_revoke_type` (MinIO only): send the session name as `TokenRevokeType` too, so
        MinIO's admin API can delete that one key (objectstore/minio_revocation.py)."""
        self.endpoint = endpoint.rstrip("/")
        self.public_endpoint = (public_endpoint or endpoint).rstrip("/")
        self.region = region
        self._role_arn = role_arn
        self._tag_revoke_type = tag_revoke_type
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._ssl = tls.for_aiohttp()
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._url = self.endpoint + "/"
        self._signer = FormPostSigner(endpoint=self.endpoint, region=region, service="sts")

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def assume_role(
        self,
        parent: AccessKey,
        *,
        policy: str,
        duration_seconds: int,
        session_name: str,
        role_arn: str | None = None,
    ) -> SessionKey:
        """POST / Action=AssumeRole (AWS STS query API, as MinIO and RGW implement it)."""
        params: dict[str, str | int] = {
            "Action": "AssumeRole",
            "Version": _STS_VERSION,
            "DurationSeconds": duration_seconds,
            "Policy": policy,
            "RoleSessionName": session_name,
        }
        role = role_arn or self._role_arn
        if role:
            params["RoleArn"] = role
        if self._tag_revoke_type:
            # MinIO keeps it in the key's claims (cmd/sts-handlers.go, tokenRevokeType); its
            # revoke-tokens admin call deletes the parent user's keys carrying it.
            params["TokenRevokeType"] = session_name
        # %20, never '+': RGW 16 mis-parses '+' inside a session policy.
        body = urlencode(params, quote_via=quote).encode()
        headers = self._signer.headers(parent, body)
        try:
            async with self._http().post(self._url, data=body, headers=headers) as response:
                status, payload = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("STS AssumeRole failed to reach %s: %s", self.endpoint, type(exc).__name__)
            raise ObjectStoreUnavailable(
                f"object store STS endpoint unreachable ({type(exc).__name__})"
            ) from None
        if status != 200:
            raise _error_from(status, payload)
        return _parse_assume_role(payload)

    def presign(
        self,
        credentials: SessionKey,
        *,
        bucket: str,
        key: str,
        method: str,
        expires_in: int,
    ) -> str:
        """A path-style SigV4 query-signed URL (works for MinIO and RGW on plain addresses)."""
        url = f"{self.public_endpoint}/{bucket}/{quote(key, safe='/~')}"
        request = AWSRequest(method=method, url=url)
        signer_credentials = Credentials(
            credentials.access_key_id, credentials.secret_access_key, credentials.session_token
        )
        S3SigV4QueryAuth(signer_credentials, "s3", self.region, expires=expires_in).add_auth(
            request
        )
        return str(request.url)

    async def check(self) -> None:
        """Any HTTP answer from the endpoint proves it is reachable."""
        try:
            async with self._http().get(self.endpoint + "/") as response:
                await response.read()
                if response.status >= 500:
                    raise ObjectStoreUnavailable(f"object store answered {response.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ObjectStoreUnavailable(
                f"object store unreachable ({type(exc).__name__})"
            ) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            # Let the connector's transports close before the loop goes away.
            await asyncio.sleep(0)


def _text(root: Any, name: str) -> str:
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == name and element.text:
            return str(element.text).strip()
    return ""


def _error_from(status: int, payload: bytes) -> ObjectStoreRejected | ObjectStoreUnavailable:
    try:
        root = ElementTree.fromstring(payload)
        code = _text(root, "Code")
    except Exception:  # an HTML error page from a proxy, say: the status is what counts
        code = ""
    log.warning("STS AssumeRole answered %s %s", status, code or "(no code)")
    if status >= 500 or status == 429 or code in {"Throttling", "ServiceUnavailable"}:
        return ObjectStoreUnavailable(f"object store STS answered {status} {code}".rstrip())
    return ObjectStoreRejected(
        f"object store STS refused the request: {status} {code}".rstrip(), aws_code=code
    )


def parse_timestamp(value: str) -> datetime:
    """ISO-8601 with any number of fraction digits (RGW sends nanoseconds)."""
    value = value.strip().replace("Z", "+00:00")
    value = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], value, count=1)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_CREDENTIAL_FIELDS: Final = frozenset(
    {"AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}
)


def _parse_assume_role(payload: bytes) -> SessionKey:
    try:
        root = ElementTree.fromstring(payload)
        found: dict[str, str] = {}
        # One pass over the tree (the first of each field, as before): the answer is small but
        # this runs on every vend.
        for element in root.iter():
            name = element.tag.rsplit("}", 1)[-1]
            if name in _CREDENTIAL_FIELDS and name not in found and element.text:
                found[name] = str(element.text).strip()
        access_key, secret_key = found.get("AccessKeyId"), found.get("SecretAccessKey")
        token, expiration = found.get("SessionToken"), found.get("Expiration")
        if not (access_key and secret_key and token and expiration):
            raise ValueError("incomplete credentials")
        return SessionKey(access_key, secret_key, token, parse_timestamp(expiration))
    except Exception:
        raise ObjectStoreRejected("object store STS answered with an unreadable body") from None
