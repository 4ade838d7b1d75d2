"""The ports: small interfaces the centre needs from the outside world.

Adapters live in one folder per outside system (secrets/, issuers/, callers/, audit/) and are
chosen in exactly one place, wiring.py. Nothing here imports an adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from credbroker.domain import Client, SecretVersion, ServiceCredentials, TemporaryCredentials


class SecretStore(Protocol):
    """Versioned key/value secrets (Vault KV v2 semantics).

    Errors: SecretNotFound, SecretStoreUnavailable (may heal by itself),
    SecretStorePermissionDenied (configuration), CasMismatch, SecretStoreReadOnly.
    """

    kind: str
    writable: bool

    async def read(self, path: str) -> SecretVersion:
        """Current version of the secret at `path`."""
        ...

    async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
        """Write a new version and return its number.

        `cas`: None writes unconditionally; 0 only if the secret does not exist yet; N only if
        the current version is N. A mismatch raises CasMismatch and writes nothing.
        """
        ...

    async def check(self) -> None:
        """Raise if the store cannot currently serve reads."""
        ...

    async def close(self) -> None: ...


class Issuer(Protocol):
    """Mints temporary, policy-scoped object-store credentials (STS AssumeRole)."""

    endpoint: str
    region: str

    async def assume_role(
        self,
        parent: ServiceCredentials,
        *,
        policy: str,
        duration_seconds: int,
        session_name: str,
        role_arn: str | None = None,
    ) -> TemporaryCredentials:
        """`role_arn` overrides the configured role (the read-only fallback has its own)."""
        ...

    def presign(
        self,
        credentials: TemporaryCredentials,
        *,
        bucket: str,
        key: str,
        method: str,
        expires_in: int,
    ) -> str:
        """A SigV4 query-signed URL; pure computation, no I/O."""
        ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...


class CallerAuth(Protocol):
    def authenticate(self, authorization: str | None) -> Client:
        """Resolve an Authorization header to a client, or raise Unauthenticated."""
        ...


class AuditSink(Protocol):
    async def record(self, event: Mapping[str, Any]) -> None:
        """Persist one audit event. Events never contain secrets."""
        ...

    async def close(self) -> None: ...
