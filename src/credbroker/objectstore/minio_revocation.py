"""Revocation that MinIO enforces: each lease's STS key is deleted by its TokenRevokeType.

What MinIO offers (minio/minio, read at 7aac2a2 of 2026-02; the route exists since
RELEASE.2025-04-03T14-56-28Z, commit 53d40e4):

- STS AssumeRole stores the form field `TokenRevokeType` in the key's claims
  (cmd/sts-handlers.go: `claims[tokenRevokeTypeClaim] = r.Form.Get("TokenRevokeType")`). The
  broker sends its lease id there (objectstore/sts.py, MinIO flavour only), so every lease is
  a type of its own.
- `POST /minio/admin/v3/revoke-tokens/builtin?user=U&tokenRevokeType=T` (madmin-go
  `RevokeTokens(RevokeTokensReq{User, TokenRevokeType})`, cmd/admin-handlers-users.go
  RevokeTokens, cmd/iam-store.go RevokeTokens) deletes every STS key whose parent user is U and
  whose claim is T; answer 204 without a body, also when nothing matched. Another user's
  tokens need `admin:RemoveServiceAccount` (else 403 AccessDenied); `fullRevoke=true` with a
  type is 400 InvalidRequest; the provider is `builtin` or `ldap` (any other: 403).

So one call per revoked lease and per parent user (the MinIO user whose key signed the
AssumeRole: the service key's user, both users of a `minio-users` pair, the read-only user).
MinIO cannot name a key by its issue time: an `issuedBefore` revocation reaches the leases the
table knows (`issue_time_gap`). A revocation on MinIO is final: the key is deleted, not denied,
so nothing is undone when the denial ends. The calls are idempotent; the names revoked by this
process are remembered so the pruning job does not repeat them every run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

from minio import MinioAdmin

from credbroker.errors import CredbrokerError, ObjectStoreRejected
from credbroker.leases import Denials, Enforcement
from credbroker.objectstore.minio_admin import AdminCredentials, _MinioAdmin
from credbroker.objectstore.tls import VERIFIED, TlsPolicy

log = logging.getLogger("credbroker.objectstore.minio_revocation")

REVOKE_PATH = "/minio/admin/v3/revoke-tokens/builtin"
ParentUsers = Callable[[], Awaitable[list[str]]]


def revoke_calls(session_names: tuple[str, ...], users: list[str]) -> list[tuple[str, str]]:
    """(user, tokenRevokeType) of each call that revokes `session_names` for `users`."""
    return [(user, name) for name in session_names for user in sorted(set(users))]


def _revoke_tokens(admin: MinioAdmin, user: str, token_type: str) -> None:
    """What madmin-go RevokeTokens sends (minio-py has no method for it): POST with the query
    `user`, `tokenRevokeType`, signed like every admin call; 204 is the only success."""
    response = admin._url_open(
        method="POST",
        command=_REVOKE_TOKENS,  # type: ignore[arg-type]
        query_params={"user": user, "tokenRevokeType": token_type},
    )
    if response.status != 204:
        raise ObjectStoreRejected(
            f"minio admin revoke tokens for {user}: HTTP {response.status}, not 204"
        )


# MinioAdmin._url_open takes a `_COMMAND` member and reads its `.value`: the path after
# /minio/admin/v3/.
_REVOKE_TOKENS = SimpleNamespace(value="revoke-tokens/builtin")


class MinioTokenRevoker(_MinioAdmin):
    kind = "minio-sts-revoke"
    issue_time_gap: str | None = (
        "MinIO cannot refuse keys by issue time: the leases the broker knows issued before that "
        "time were revoked one by one; a key it does not know (vended before the broker sent "
        "TokenRevokeType, or by anyone else from the same user) is not"
    )

    def __init__(
        self,
        *,
        endpoint: str,
        parent_users: ParentUsers,
        admin_credentials: AdminCredentials,
        region: str = "",
        tls: TlsPolicy = VERIFIED,
        timeout_seconds: float = 10.0,
        concurrency: int = 8,
    ) -> None:
        super().__init__(
            endpoint=endpoint,
            owner="sts",
            admin_credentials=admin_credentials,
            region=region,
            tls=tls,
            timeout_seconds=timeout_seconds,
        )
        self._parent_users = parent_users
        self._limit = asyncio.Semaphore(concurrency)
        self._done: set[tuple[str, str]] = set()  # (user, lease id) MinIO answered 204 for

    def check(self, denials: Denials) -> None:
        return None  # one call per lease: no size limit

    async def apply(self, denials: Denials) -> Enforcement:
        users = await self._parent_users()
        if denials.session_names and not users:
            return Enforcement(
                False,
                "not enforced: no MinIO parent user is known (leases.parent_users, and the "
                "service key's secret is missing), so no key could be named",
            )
        calls = [c for c in revoke_calls(denials.session_names, users) if c not in self._done]

        async def one(user: str, name: str) -> None:
            async with self._limit:
                await self._revoke(user, name)
            self._done.add((user, name))

        results = await asyncio.gather(*(one(u, n) for u, n in calls), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        for result in failed:
            if not isinstance(result, CredbrokerError):
                raise result
        if failed:
            log.error("minio revoke-tokens: %d of %d calls failed", len(failed), len(calls))
            raise failed[0]  # the Revoker reports it; the pruning job retries the rest
        if not denials.session_names:
            return Enforcement(True, "MinIO: no revoked lease has a live key")
        return Enforcement(
            True,
            f"MinIO deleted the STS keys of {len(denials.session_names)} revoked leases "
            f"(revoke-tokens by TokenRevokeType, parent users {', '.join(sorted(set(users)))}; "
            f"{len(calls)} calls now); a deleted key stays deleted",
        )

    async def _revoke(self, user: str, lease_id: str) -> None:
        """Delete the STS keys of `user` tagged `lease_id` (204 also when there were none)."""
        await self._call("revoke tokens", user, lambda a: _revoke_tokens(a, user, lease_id))
