"""Does the object store accept this key? One real SigV4-signed call answers it, nothing else.

Rotation asks twice: "does the new key work?" (before it reaches the secret store) and "is the
old key refused?" (after it was deleted, or its secret scrambled). Two calls are used:

    STS  POST /  Action=AssumeRole   the new parent key can do what the broker does with it:
                                      with a proof scope, the key it mints under that scope's
                                      session policy then lists the scope
                                      (GET /bucket?list-type=2), because an STS server mints
                                      keys for a parent with no policy at all (MinIO does),
                                      and such keys can do nothing
    S3   GET  /  (ListBuckets)        the key is known to the object store at all

How each server answers an unknown (deleted) key, as observed or read at the source:

    Ceph RGW 16  403 AccessDenied on S3 and STS alike, for a removed key and for a key that
                 never existed (tests/integration/test_rotation_rgw.py pins this); never
                 InvalidAccessKeyId. ListBuckets is always allowed to a valid RGW user, so
                 403 on GET / means the key is gone.
    MinIO        403 InvalidAccessKeyId for an unknown key, SignatureDoesNotMatch for a known key
                 with the wrong secret; a valid key always gets 200 (see below), so over S3
                 the probe proves authentication only. A built-in user whose
                 secret was changed (the pair driver's retire) answers SignatureDoesNotMatch
                 on S3. MinIO's STS maps every authentication failure to AccessDenied
                 (cmd/sts-handlers.go apiToSTSError), so over STS the refusal is AccessDenied.
                 ListBuckets never answers AccessDenied to a signed-in caller: it lists only
                 what the caller may see (cmd/bucket-handlers.go ListBucketsHandler).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Final
from urllib.parse import quote, urlencode

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from defusedxml import ElementTree
from yarl import URL

from credbroker.domain import AccessKey, Flavor, Scope, SessionKey
from credbroker.errors import ObjectStoreRejected, ObjectStoreUnavailable
from credbroker.objectstore.tls import VERIFIED, TlsPolicy
from credbroker.policy import render_policy, session_policy
from credbroker.ports import Issuer

log = logging.getLogger("credbroker.objectstore.probe")

# 403 codes that mean "no such key", per flavor (see the module docstring).
_UNKNOWN_KEY: Final = {
    Flavor.RGW: frozenset({"AccessDenied", "InvalidAccessKeyId"}),
    Flavor.MINIO: frozenset({"InvalidAccessKeyId"}),
}
# A session policy that grants nothing useful: the probe's temporary key is thrown away, and
# even if it leaked it could read one object of a bucket nobody creates.
_PROBE_POLICY: Final = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": ["arn:aws:s3:::credbroker-rotation-probe/none"],
            }
        ],
    },
    separators=(",", ":"),
)


class SignedCallProbe:
    """KeyProbe over the broker's own STS issuer plus a signed S3 ListBuckets."""

    def __init__(
        self,
        *,
        issuer: Issuer,
        endpoint: str,
        region: str,
        flavor: Flavor,
        tls: TlsPolicy = VERIFIED,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._issuer = issuer
        self._endpoint = endpoint.rstrip("/")
        self._region = region
        self._flavor = Flavor(flavor)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._ssl = tls.for_aiohttp()
        self._session: aiohttp.ClientSession | None = None

    async def accepts(
        self,
        key: AccessKey,
        *,
        via: str,
        role_arn: str | None,
        proof: Scope | None = None,
    ) -> None:
        if via == "sts":
            policy = (
                _PROBE_POLICY
                if proof is None
                else render_policy(session_policy(proof, flavor=self._flavor), flavor=self._flavor)
            )
            minted = await self._issuer.assume_role(
                key,
                policy=policy,
                duration_seconds=900,
                session_name="credbroker-rotation-probe",
                role_arn=role_arn,
            )
            if proof is not None:
                await self._lists(minted, proof, parent=key.access_key_id)
            return
        status, code = await self._list_buckets(key)
        if status == 200:
            return
        if status == 403 and code not in _UNKNOWN_KEY[self._flavor] | {"SignatureDoesNotMatch"}:
            return  # authenticated; the key's policy just does not allow ListBuckets
        raise ObjectStoreRejected(
            f"object store refused key {key.access_key_id}: {status} {code}".rstrip(),
            aws_code=code,
        )

    async def refuses(
        self, key: AccessKey, *, via: str = "s3", role_arn: str | None = None
    ) -> bool:
        refused = _UNKNOWN_KEY[self._flavor] | {"SignatureDoesNotMatch"}
        if via == "sts":
            try:
                await self.accepts(key, via="sts", role_arn=role_arn)
            except ObjectStoreRejected as exc:
                # STS answers every authentication failure as AccessDenied on both servers
                # (MinIO: cmd/sts-handlers.go apiToSTSError). For a key that could AssumeRole
                # until its retirement, that is the refusal being proven.
                return exc.aws_code in refused | {"AccessDenied"}
            return False
        status, code = await self._list_buckets(key)
        return status == 403 and code in refused

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            await asyncio.sleep(0)  # let the connector's transports close

    async def _lists(self, minted: SessionKey, proof: Scope, *, parent: str) -> None:
        """GET /bucket?list-type=2&prefix=P&max-keys=1 with a key `parent` minted: 200 proves
        the parent's own policy lets a vended key do its job."""
        query = urlencode(
            {"list-type": "2", "max-keys": "1", "prefix": proof.prefix}, quote_via=quote
        )
        status, code = await self._signed_get(
            f"{self._endpoint}/{proof.bucket}?{query}",
            Credentials(minted.access_key_id, minted.secret_access_key, minted.session_token),
        )
        if code == "NoSuchBucket":
            raise ObjectStoreRejected(
                f"bucket {proof.bucket} does not exist (404 NoSuchBucket); a space names it",
                aws_code=code,
            )
        if status != 200:
            raise ObjectStoreRejected(
                f"key {parent} authenticates, but a key it mints may not list "
                f"s3://{proof.bucket}/{proof.prefix} ({status} {code}); check the policy "
                "attached to its user",
                aws_code=code,
            )

    async def _list_buckets(self, key: AccessKey) -> tuple[int, str]:
        """GET / signed with `key`: (HTTP status, S3 error code or "")."""
        status, code = await self._signed_get(
            self._endpoint + "/", Credentials(key.access_key_id, key.secret_access_key)
        )
        log.debug("key check of %s: %s %s", key.access_key_id, status, code)
        return status, code

    async def _signed_get(self, url: str, credentials: Credentials) -> tuple[int, str]:
        request = AWSRequest(method="GET", url=url)
        S3SigV4Auth(credentials, "s3", self._region).add_auth(request)
        try:
            # encoded=True: send the query exactly as signed (no requoting).
            async with self._http().get(
                URL(request.url, encoded=True), headers=dict(request.headers.items())
            ) as response:
                status, payload = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ObjectStoreUnavailable(
                f"object store unreachable for a key check ({type(exc).__name__})"
            ) from None
        if status >= 500 or status == 429:
            raise ObjectStoreUnavailable(f"object store answered {status} to a key check")
        return status, _error_code(payload) if status != 200 else ""

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=4, ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session


def _error_code(payload: bytes) -> str:
    try:
        root = ElementTree.fromstring(payload)
    except Exception:  # an HTML page from a proxy: the status is what counts
        return ""
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "Code" and element.text:
            return str(element.text).strip()
    return ""
