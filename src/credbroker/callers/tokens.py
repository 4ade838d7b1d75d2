"""Bearer tokens for automation rules, stored only as SHA-256 hashes.

Tokens are 256-bit random values minted by `credbroker clients new-token`, so a fast hash is
the right tool (a slow password hash protects low-entropy secrets, and would cost every vend
tens of milliseconds). Every stored hash is compared, in constant time, on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

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
        digest = hashlib.sha256(token.encode()).digest()
        found: Client | None = None
        for stored, client in self._clients:
            # No early exit: every hash is compared, whatever matches.
            if hmac.compare_digest(stored, digest):
                found = client
        if found is None:
            raise Unauthenticated("unknown or revoked token")
        return found
