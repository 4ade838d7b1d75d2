"""Domain types shared by the vend path and every adapter. Plain, immutable, no I/O."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


class Access(enum.StrEnum):
    READ = "read"
    WRITE = "write"

    def allows(self, wanted: Access) -> bool:
        return self is Access.WRITE or wanted is Access.READ


@dataclass(frozen=True, slots=True)
class Scope:
    """Exactly what one vended key may touch: one bucket, one prefix, one access level.

    `prefix` is either "" (the whole bucket) or ends with "/".
    """

    bucket: str
    prefix: str
    access: Access


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """One version of one secret as a secret store returns it."""

    data: Mapping[str, str] = field(repr=False)
    version: int

    def get(self, key: str) -> str:
        return self.data[key]


@dataclass(frozen=True, slots=True)
class ServiceCredentials:
    """Long-lived object-store keys the broker signs STS calls with. Never leaves the broker."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    version: int = 0

    @classmethod
    def from_secret(cls, secret: SecretVersion) -> ServiceCredentials:
        return cls(
            access_key_id=secret.get("access_key_id"),
            secret_access_key=secret.get("secret_access_key"),
            version=secret.version,
        )

    def as_secret_data(self) -> dict[str, str]:
        return {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}


@dataclass(frozen=True, slots=True)
class TemporaryCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime


@dataclass(frozen=True, slots=True)
class Client:
    """An automation rule (or a family of rules) allowed to ask for keys."""

    id: str
    spaces: frozenset[str]
    max_access: Access
    max_ttl_seconds: int
    admin: bool = False
