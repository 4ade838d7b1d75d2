"""The `subject` fixture: one SecretStore adapter per parameter, each with a fresh namespace.

vault-double           VaultKV2Store -> VaultDouble, token auth
vault-double-approle   VaultKV2Store -> VaultDouble, AppRole auth
embedded               EmbeddedSecretStore on a sealed file in tmp_path
vault-real             VaultKV2Store -> the `real_vault` server (tests/conftest.py), token
                       auth: $VAULT_ADDR with $VAULT_TOKEN if set (mount $VAULT_KV_MOUNT,
                       default "secret", optional $VAULT_NAMESPACE and $VAULT_CACERT), else a
                       throw-away OpenBao dev server; everything under a random prefix, deleted
                       after.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from credbroker.ports import SecretStore
from credbroker.secrets.vault import VaultKV2Store
from tests.doubles.vault import VaultDouble
from tests.openbao_server import VaultServer, admin_client

STORES = ["vault-double", "vault-double-approle", "embedded", "vault-real"]


@dataclass
class Subject:
    """A store under test plus unique secret paths for this test only."""

    store: SecretStore
    prefix: str = field(default_factory=lambda: f"credbroker-contract-{uuid.uuid4().hex[:12]}")
    used: list[str] = field(default_factory=list)

    def path(self, name: str) -> str:
        path = f"{self.prefix}/{name}"
        self.used.append(path)
        return path


@pytest.fixture(params=STORES)
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    kind: str = request.param
    if kind == "embedded":
        async for subject in _embedded(tmp_path):
            yield subject
    elif kind == "vault-real":
        async for subject in _vault_real(request.getfixturevalue("real_vault")):
            yield subject
    else:
        async for subject in _vault_double(approle=kind.endswith("approle")):
            yield subject


async def _vault_double(*, approle: bool) -> AsyncIterator[Subject]:
    async with VaultDouble() as vault:
        if approle:
            vault.add_approle("contract-role", "contract-secret-id")
            store = VaultKV2Store(
                vault.url, approle_role_id="contract-role", approle_secret_id="contract-secret-id"
            )
        else:
            vault.add_token("contract-token")
            store = VaultKV2Store(vault.url, token="contract-token")
        try:
            yield Subject(store)
        finally:
            await store.close()


async def _embedded(tmp_path: Path) -> AsyncIterator[Subject]:
    try:
        from credbroker.secrets.embedded import EmbeddedSecretStore
    except ImportError as exc:
        pytest.skip(f"credbroker.secrets.embedded is not importable yet: {exc}")
    store = EmbeddedSecretStore(tmp_path / "secrets.sealed", os.urandom(32))
    try:
        yield Subject(store)
    finally:
        await store.close()


async def _vault_real(server: VaultServer) -> AsyncIterator[Subject]:
    store = VaultKV2Store(
        server.addr,
        token=server.token,
        mount_point=server.mount,
        namespace=server.namespace,
        verify=server.verify,
    )
    subject = Subject(store)
    try:
        yield subject
    finally:
        await store.close()
        await asyncio.to_thread(_delete_real, server, subject.used)


def _delete_real(server: VaultServer, paths: list[str]) -> None:
    """DELETE /v1/{mount}/metadata/{path}: every version and the key itself."""
    client = admin_client(server)
    try:
        for path in set(paths):
            client.secrets.kv.v2.delete_metadata_and_all_versions(
                path=path, mount_point=server.mount
            )
    finally:
        client.adapter.close()
