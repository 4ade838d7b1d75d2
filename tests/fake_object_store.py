"""FakeObjectStore: users and their keys in memory, with a KeyDriver and a KeyProbe over them.

For the rotation use case's unit tests, where the real servers are too slow to walk every
branch. It models what matters to rotation: a new key becomes valid only after `settle`
probes (eventual consistency), a deleted key is refused only after `settle` more, and any
operation can be made to fail.
"""

from __future__ import annotations

import secrets
import string
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from credbroker.domain import AccessKey, Scope
from credbroker.errors import ObjectStoreRejected

_ALPHABET = string.ascii_uppercase + string.digits


@dataclass
class FakeObjectStore:
    settle: int = 0  # probes before a new key works / a deleted key is refused
    keys: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    calls: list[str] = field(default_factory=list)
    fail: dict[str, Callable[[], Exception]] = field(default_factory=dict)
    never_valid: bool = False  # new keys never start to work
    lagging: bool = False  # deleted keys go on working (a replica that has not caught up)
    # New keys authenticate, but their user has no policy: a key they mint can do nothing.
    powerless: bool = False
    proofs: list[Scope | None] = field(default_factory=list)  # what each accepts() was asked
    _pending: dict[str, int] = field(default_factory=dict)  # key id -> probes until it settles
    _deleted: dict[str, str] = field(default_factory=dict)  # key id -> secret, still accepted

    def add_key(self, user: str) -> AccessKey:
        key = AccessKey(_new_id(), secrets.token_urlsafe(30))
        self.keys[user][key.access_key_id] = key.secret_access_key
        return key

    def user_keys(self, user: str) -> list[str]:
        return sorted(self.keys[user])

    def works(self, key: AccessKey) -> bool:
        return any(
            keys.get(key.access_key_id) == key.secret_access_key for keys in self.keys.values()
        )

    def _check(self, op: str) -> None:
        self.calls.append(op)
        if op in self.fail:
            raise self.fail[op]()

    def driver_for(self, user: str) -> FakeDriver:
        return FakeDriver(self, user)

    @property
    def probe(self) -> FakeProbe:
        return FakeProbe(self)


class FakeDriver:
    kind = "fake"
    fixed_keys = False

    def __init__(self, world: FakeObjectStore, owner: str) -> None:
        self.world = world
        self.owner = owner

    async def list_keys(self) -> list[str]:
        self.world._check("list")
        return self.world.user_keys(self.owner)

    async def create_key(self, *, keep: str | None = None) -> AccessKey:
        self.world._check("create")
        key = self.world.add_key(self.owner)
        self.world._pending[key.access_key_id] = self.world.settle
        return key

    async def delete_key(self, key_id: str) -> None:
        self.world._check("delete")
        secret = self.world.keys[self.owner].pop(key_id, None)
        if secret is not None:
            self.world._deleted[key_id] = secret
            self.world._pending[key_id] = self.world.settle

    async def close(self) -> None:
        return None


class FakeProbe:
    def __init__(self, world: FakeObjectStore) -> None:
        self.world = world

    async def accepts(
        self,
        key: AccessKey,
        *,
        via: str,
        role_arn: str | None,
        proof: Scope | None = None,
    ) -> None:
        self.world._check("accepts")
        self.world.proofs.append(proof)
        if self.world.never_valid or self._unsettled(key.access_key_id):
            raise ObjectStoreRejected("InvalidAccessKeyId", aws_code="InvalidAccessKeyId")
        if not self.world.works(key):
            raise ObjectStoreRejected("InvalidAccessKeyId", aws_code="InvalidAccessKeyId")
        if proof is not None and self.world.powerless:
            raise ObjectStoreRejected("AccessDenied", aws_code="AccessDenied")

    async def refuses(
        self, key: AccessKey, *, via: str = "s3", role_arn: str | None = None
    ) -> bool:
        self.world._check("refuses")
        if key.access_key_id in self.world._deleted and (
            self.world.lagging or self._unsettled(key.access_key_id)
        ):
            return False
        return not self.world.works(key)

    async def close(self) -> None:
        return None

    def _unsettled(self, key_id: str) -> bool:
        left = self.world._pending.get(key_id, 0)
        if left > 0:
            self.world._pending[key_id] = left - 1
            return True
        return False


def _new_id() -> str:
    return "FK" + "".join(secrets.choice(_ALPHABET) for _ in range(18))
