"""Keys whose owner rotates them, not the broker (a read-only secret store: CyberArk's CPM
behind CCP). What `credbroker rotation status` shows for them: the key id in service (never
the secret), the store's version as the broker counts it, and who rotates. The broker follows
such a rotation by itself: a key the object store refuses is read again (vend.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from credbroker.errors import CredbrokerError
from credbroker.ports import SecretStore


@dataclass(frozen=True, slots=True)
class OwnerRotatedKey:
    name: str
    secret_path: str
    rotated_by: str
    current_key_id: str | None
    version: int | None
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


async def owner_rotated_status(
    keys: Mapping[str, str], store: SecretStore, *, owner: str
) -> list[OwnerRotatedKey]:
    """`keys`: name -> secret path (the service key, the fallback's). A store that cannot
    answer is named in `problems`."""
    statuses = []
    for name, path in keys.items():
        problems: list[str] = []
        key_id: str | None = None
        version: int | None = None
        try:
            secret = await store.read(path)
            key_id, version = secret.get("access_key_id"), secret.version
        except CredbrokerError as exc:
            problems.append(f"secret store: {exc.message}")
        except KeyError:
            problems.append("secret store: the secret has no access_key_id")
        statuses.append(OwnerRotatedKey(name, path, owner, key_id, version, problems))
    return statuses
