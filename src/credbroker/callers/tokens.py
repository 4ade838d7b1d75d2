"""Bearer tokens for automation rules, stored only as SHA-256 hashes.

Tokens are 256-bit random values minted by `credbroker clients new-token` or `credbroker tokens
issue`, so a fast hash is
the right tool (a slow password hash protects low-entropy secrets, and would cost every vend
tens of milliseconds). Every stored hash is compared, in constant time, on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from credbroker.control import ControlPlane
from credbroker.domain import Client
from credbroker.errors import Unauthenticated

TOKEN_PREFIX = "cbk_"  # noqa: S105 - a marker, not a secret
_MAX_HEADER = 512


def new_token() -> tuple[str, str]:
    """A fresh token and the hash to put in the config."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


class TokenAuth:
    def __init__(self, clients: Iterable[tuple[str, Client]]) -> None:
        self._clients = [(bytes.fromhex(digest), client) for digest, client in clients]

    def authenticate(self, authorization: str | None) -> Client:
        digest = bearer_digest(authorization)
        found: Client | None = None
        for stored, client in self._clients:
            # No early exit: every hash is compared, whatever matches.
            if hmac.compare_digest(stored, digest):
                found = client
        if found is None:
            raise Unauthenticated("unknown or revoked token")
        return found


class LiveTokenAuth:
    """ports.CallerAuth over the control plane's in-memory snapshot: the config file's clients
    and the state store's principals and tokens, as every replica last loaded them (no
    database round trip per request). An expired token is refused like an unknown one."""

    def __init__(
        self, control: ControlPlane, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._control = control
        self._clock = clock

    def authenticate(self, authorization: str | None) -> Client:
        digest = bearer_digest(authorization)
        snapshot = self._control.snapshot
        found = -1
        compare = hmac.compare_digest
        for index, stored in enumerate(snapshot.digests):
            # No early exit: every hash is compared, whatever matches.
            if compare(stored, digest):
                found = index
        if found < 0:
            raise Unauthenticated("unknown or revoked token")
        credential = snapshot.credentials[found]
        if credential.expires_at is not None and self._clock() >= credential.expires_at:
            raise Unauthenticated("token expired")
        return credential.client


def bearer_digest(authorization: str | None) -> bytes:
    """The SHA-256 of the bearer token in an Authorization header, or Unauthenticated."""
    if not authorization:
        raise Unauthenticated("missing Authorization: Bearer token")
    # Tokens are ASCII. A header carrying other bytes arrives from aiohttp as text with
    # surrogate escapes (or as whatever the client sent): refused before anything encodes it.
    if len(authorization) > _MAX_HEADER or not authorization.isascii():
        raise Unauthenticated("Authorization must be 'Bearer <token>' in ASCII")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("Authorization must be 'Bearer <token>'")
    return hashlib.sha256(token.encode()).digest()
