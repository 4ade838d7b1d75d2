"""What the compliance check asks the object store (botocore's S3 client, off the event loop;
a daily check needs no connection pool of its own).

BucketExposure: is a bucket public? Asked three ways, with a key allowed to read the bucket's
settings (its owner, or an admin): GetBucketPolicy (a statement allowing Principal "*" or
{"AWS": "*"}), GetBucketAcl (a grant to the AllUsers or AuthenticatedUsers group), and an
anonymous (unsigned) ListObjectsV2, which the store must refuse. GetPublicAccessBlock is
reported as evidence.

ReadOnlyWriteProbe: can the read-only fallback identity write? Its own key PUTs a canary
object, and so does a key it mints with AssumeRole (its role) under a session policy that
allows the PUT, so only the identity's own permissions can refuse it. An object that was
written is deleted again at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import botocore.session
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from credbroker.domain import Access, AccessKey, Flavor, Scope
from credbroker.errors import ObjectStoreRejected, ObjectStoreUnavailable
from credbroker.objectstore.tls import TlsPolicy
from credbroker.policy import render_policy, session_policy
from credbroker.ports import Issuer

_PUBLIC_GROUPS = (
    "http://acs.amazonaws.com/groups/global/AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
)


def _client(
    endpoint: str, region: str, tls: TlsPolicy, key: AccessKey | None, token: str | None = None
) -> Any:
    config = Config(
        signature_version=UNSIGNED if key is None else "s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1},
        connect_timeout=10,
        read_timeout=10,
    )
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key.access_key_id if key else None,
        aws_secret_access_key=key.secret_access_key if key else None,
        aws_session_token=token,
        verify=tls.for_requests(),
        config=config,
    )


def _code(exc: ClientError) -> tuple[int, str]:
    response: dict[str, Any] = exc.response
    return int(response["ResponseMetadata"]["HTTPStatusCode"]), str(response["Error"]["Code"])


def public_statements(policy: dict[str, Any]) -> list[str]:
    found = []
    statements = policy.get("Statement", [])
    for index, statement in enumerate(statements if isinstance(statements, list) else []):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal")
        aws = principal.get("AWS") if isinstance(principal, dict) else principal
        values = aws if isinstance(aws, list) else [aws]
        if "*" in values:
            condition = " (with a condition)" if statement.get("Condition") else ""
            found.append(
                f"bucket policy statement {index} allows Principal * "
                f"{statement.get('Action')}{condition}"
            )
    return found


class S3BucketExposure:
    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        tls: TlsPolicy,
        credentials: Callable[[], Awaitable[AccessKey]],
    ) -> None:
        self._endpoint, self._region, self._tls = endpoint, region, tls
        self._credentials = credentials

    async def public_findings(self, bucket: str) -> tuple[list[str], list[str]]:
        key = await self._credentials()
        return await asyncio.to_thread(self._ask, bucket, key)

    def _ask(self, bucket: str, key: AccessKey) -> tuple[list[str], list[str]]:
        findings: list[str] = []
        evidence: list[str] = []
        s3 = _client(self._endpoint, self._region, self._tls, key)
        anonymous = _client(self._endpoint, self._region, self._tls, None)
        try:
            try:
                policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
                statements = public_statements(policy)
                findings += statements
                evidence.append(
                    f"GetBucketPolicy: {len(policy.get('Statement', []))} statement(s), "
                    f"{len(statements)} for everyone"
                )
            except ClientError as exc:
                status, code = _code(exc)
                if code != "NoSuchBucketPolicy":
                    raise
                evidence.append("GetBucketPolicy: no bucket policy")
            acl = s3.get_bucket_acl(Bucket=bucket)
            public = [
                f"ACL grants {g.get('Permission')} to {g['Grantee'].get('URI')}"
                for g in acl.get("Grants", [])
                if g.get("Grantee", {}).get("URI") in _PUBLIC_GROUPS
            ]
            findings += public
            evidence.append(
                f"GetBucketAcl: {len(acl.get('Grants', []))} grant(s), public: {len(public)}"
            )
            try:
                block = s3.get_public_access_block(Bucket=bucket)
                evidence.append(f"GetPublicAccessBlock: {block['PublicAccessBlockConfiguration']}")
            except ClientError as exc:
                evidence.append(f"GetPublicAccessBlock: {_code(exc)[1]}")
            try:
                anonymous.list_objects_v2(Bucket=bucket, MaxKeys=1)
                findings.append("an anonymous ListObjectsV2 was answered 200")
            except ClientError as exc:
                status, code = _code(exc)
                evidence.append(f"anonymous ListObjectsV2: refused {status} {code}")
        except ClientError as exc:
            status, code = _code(exc)
            raise ObjectStoreRejected(
                f"{bucket}: the object store refused a settings read: {status} {code}",
                aws_code=code,
            ) from None
        except BotoCoreError as exc:
            raise ObjectStoreUnavailable(f"{bucket}: {type(exc).__name__}") from None
        finally:
            s3.close()
            anonymous.close()
        return findings, evidence

    async def close(self) -> None:
        return None


class ReadOnlyWriteProbe:
    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        tls: TlsPolicy,
        flavor: Flavor,
        issuer: Issuer,
        role_arn: str | None,
        credentials: Callable[[], Awaitable[AccessKey]],
    ) -> None:
        self._endpoint, self._region, self._tls, self._flavor = endpoint, region, tls, flavor
        self._issuer = issuer
        self._role_arn = role_arn
        self._credentials = credentials

    async def write_refused(self, bucket: str, key: str) -> tuple[bool, list[str]]:
        parent = await self._credentials()
        evidence: list[str] = []
        refused = await asyncio.to_thread(
            self._put, "its own key", parent, None, bucket, key, evidence
        )
        prefix = key.rpartition("/")[0] + "/"
        policy = render_policy(
            session_policy(
                Scope(bucket=bucket, prefix=prefix, access=Access.WRITE), flavor=self._flavor
            ),
            flavor=self._flavor,
        )
        try:
            session = await self._issuer.assume_role(
                parent,
                policy=policy,
                duration_seconds=900,
                session_name="cb-compliance-probe",
                role_arn=self._role_arn,
            )
        except ObjectStoreRejected as exc:
            evidence.append(f"AssumeRole ({self._role_arn}) refused: {exc.aws_code}")
            return refused, evidence
        minted = AccessKey(session.access_key_id, session.secret_access_key)
        refused &= await asyncio.to_thread(
            self._put,
            f"a key it minted ({session.access_key_id}, role {self._role_arn})",
            minted,
            session.session_token,
            bucket,
            key,
            evidence,
        )
        return refused, evidence

    def _put(
        self,
        who: str,
        key: AccessKey,
        token: str | None,
        bucket: str,
        name: str,
        evidence: list[str],
    ) -> bool:
        s3 = _client(self._endpoint, self._region, self._tls, key, token)
        try:
            s3.put_object(Bucket=bucket, Key=name, Body=b"credbroker compliance canary")
        except ClientError as exc:
            status, code = _code(exc)
            evidence.append(f"PUT s3://{bucket}/{name} with {who}: refused {status} {code}")
            return status == 403
        except BotoCoreError as exc:
            raise ObjectStoreUnavailable(f"write probe: {type(exc).__name__}") from None
        else:
            evidence.append(f"PUT s3://{bucket}/{name} with {who}: WRITTEN (200)")
            try:
                s3.delete_object(Bucket=bucket, Key=name)
                evidence.append("the canary object was deleted again")
            except ClientError as exc:
                evidence.append(f"the canary could not be deleted: {_code(exc)[1]}")
            return False
        finally:
            s3.close()

    async def close(self) -> None:
        return None
