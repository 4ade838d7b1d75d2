"""Revocation that Ceph RGW enforces: a Deny in the vend role's permission policy.

RGW evaluates the role's permission policies on every request made with a key of that role,
and puts two facts of the session into the request's environment (Ceph's source:
`aws:userid` = "<role id>:<RoleSessionName>", `aws:TokenIssueTime` = when the token was
issued). The broker's RoleSessionName is the lease id, so one inline policy of the vend role,
`credbroker-revocations` by default, written with IAM PutRolePolicy, refuses:

    {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::*",
     "Condition": {"StringLike": {"aws:userid": ["*:cb-...", ...]}}}          revoked leases
    {"Effect": "Deny", ..., "Condition": {"DateLessThan": {"aws:TokenIssueTime": T}}}
                                                                     every key issued before T

Measured on RGW 16 (scripts/rgw-dev.sh, tests/integration/test_revocation_rgw.py): the next
request with a revoked key gets 403 AccessDenied, keys not named keep working, and a key issued
after T works. The policy is rewritten whole from the state store on every revocation and by
the pruning job, so entries whose keys have expired drop out. RGW 16 refuses policy text with
whitespace (MalformedPolicyDocument): it is sent compact. RGW 16 set no size limit on the
policy in our tests (64 kB accepted); AWS allows 10,240 characters of inline role policy, and
that is the limit kept here (about 300 revoked, unexpired leases at once).

The IAM calls are signed with the RGW admin key (caps roles=*), read from the secret store at
each call; botocore's IAM client runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from credbroker.domain import AccessKey
from credbroker.errors import ObjectStoreRejected, ObjectStoreUnavailable, RevocationTooLarge
from credbroker.leases import Denials, Enforcement
from credbroker.objectstore.tls import VERIFIED, TlsPolicy

log = logging.getLogger("credbroker.objectstore.rgw_revocation")

MAX_POLICY_CHARS = 10_240


def deny_document(denials: Denials) -> str | None:
    """The compact policy text for `denials` (None: nothing to deny)."""
    statements: list[dict[str, Any]] = []
    if denials.session_names:
        statements.append(
            {
                "Sid": "RevokedLeases",
                "Effect": "Deny",
                "Action": "s3:*",
                "Resource": "arn:aws:s3:::*",
                "Condition": {
                    "StringLike": {"aws:userid": [f"*:{name}" for name in denials.session_names]}
                },
            }
        )
    if denials.issued_before is not None:
        statements.append(
            {
                "Sid": "IssuedBefore",
                "Effect": "Deny",
                "Action": "s3:*",
                "Resource": "arn:aws:s3:::*",
                "Condition": {
                    "DateLessThan": {
                        "aws:TokenIssueTime": denials.issued_before.strftime("%Y-%m-%dT%H:%M:%SZ")
                    }
                },
            }
        )
    if not statements:
        return None
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, separators=(",", ":"))


class RgwRolePolicyEnforcer:
    kind = "rgw-role-policy"
    issue_time_gap: str | None = None  # aws:TokenIssueTime: every key issued before T, known or not

    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        role_name: str,
        policy_name: str,
        admin_credentials: Callable[[], Awaitable[AccessKey]],
        tls: TlsPolicy = VERIFIED,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._endpoint = endpoint
        self._region = region
        self._role = role_name
        self._policy = policy_name
        self._admin_credentials = admin_credentials
        self._verify = tls.for_requests()
        self._timeout = timeout_seconds
        # One IAM client per admin key id (building one costs ~100 ms); a new key, a new one.
        self._client: tuple[str, Any] | None = None

    def check(self, denials: Denials) -> None:
        text = deny_document(denials)
        if text is not None and len(text) > MAX_POLICY_CHARS:
            raise RevocationTooLarge(
                f"{len(denials.session_names)} revoked leases are still unexpired: one more "
                f"does not fit in the role policy ({len(text)} of {MAX_POLICY_CHARS} chars). "
                "Revoke by --issued-before (one entry for any number of keys), or wait for "
                "revoked keys to expire"
            )

    async def apply(self, denials: Denials) -> Enforcement:
        self.check(denials)
        text = deny_document(denials)
        admin = await self._admin_credentials()
        await asyncio.to_thread(self._write, admin, text)
        if text is None:
            return Enforcement(True, f"RGW: no denial in effect (policy {self._policy} removed)")
        parts = []
        if denials.session_names:
            parts.append(f"{len(denials.session_names)} revoked session names")
        if denials.issued_before is not None:
            parts.append(f"keys issued before {denials.issued_before.isoformat()}")
        return Enforcement(
            True,
            f"RGW refuses {' and '.join(parts)} from the next request (Deny in the permission "
            f"policy {self._policy} of role {self._role}, {len(text)} chars)",
        )

    def _iam(self, admin: AccessKey) -> Any:
        cached = self._client
        if cached is not None and cached[0] == admin.access_key_id + admin.secret_access_key:
            return cached[1]
        if cached is not None:
            cached[1].close()
        iam = botocore.session.get_session().create_client(
            "iam",
            endpoint_url=self._endpoint,
            region_name=self._region,
            aws_access_key_id=admin.access_key_id,
            aws_secret_access_key=admin.secret_access_key,
            verify=self._verify,
            config=Config(
                connect_timeout=self._timeout,
                read_timeout=self._timeout,
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )
        self._client = (admin.access_key_id + admin.secret_access_key, iam)
        return iam

    def _write(self, admin: AccessKey, text: str | None) -> None:
        iam = self._iam(admin)
        try:
            if text is None:
                # Only if it is there: RGW 16 answers DeleteRolePolicy of a missing policy with
                # a success body followed by an error document, which no client can parse.
                names = iam.list_role_policies(RoleName=self._role).get("PolicyNames", [])
                if self._policy in names:
                    iam.delete_role_policy(RoleName=self._role, PolicyName=self._policy)
            else:
                iam.put_role_policy(
                    RoleName=self._role, PolicyName=self._policy, PolicyDocument=text
                )
        except ClientError as exc:
            error: Exception = ObjectStoreRejected(
                f"rgw iam {'delete' if text is None else 'put'} role policy {self._policy} of "
                f"{self._role}: {_code(exc)}",
                aws_code=_code(exc),
            )
        except BotoCoreError as exc:
            error = ObjectStoreUnavailable(
                f"rgw iam role policy of {self._role}: unreachable ({type(exc).__name__})"
            )
        else:
            return
        raise error

    async def close(self) -> None:
        cached, self._client = self._client, None
        if cached is not None:
            cached[1].close()


def _code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code") or "Unknown")
