"""The `subject` fixture: one SecretStore adapter per parameter, each with a fresh namespace.

vault-double           VaultKV2Store -> VaultDouble, token auth
vault-double-approle   VaultKV2Store -> VaultDouble, AppRole auth
embedded               EmbeddedSecretStore on a sealed file in tmp_path
vault-real             VaultKV2Store -> the `real_vault` server (tests/conftest.py), token
                       auth: $VAULT_ADDR with $VAULT_TOKEN if set (mount $VAULT_KV_MOUNT,
                       default "secret", optional $VAULT_NAMESPACE and $VAULT_CACERT), else a
                       throw-away OpenBao dev server; everything under a random prefix, deleted
                       after.
ccp-double             CyberArkCcpStore -> CcpDouble over mTLS (read-only: its owner, the
                       double's CPM, changes secrets)
ccp-real               CyberArkCcpStore -> a real CCP named by $CYBERARK_CCP_URL, $CYBERARK_APP_ID,
                       $CYBERARK_SAFE, $CYBERARK_OBJECT (an account this AppID may read; fields
                       UserName and Content, or $CYBERARK_ID_PROPERTY for the key id), optional
                       $CYBERARK_CCP_CERT + $CYBERARK_CCP_KEY (client certificate),
                       $CYBERARK_CCP_CA, $CYBERARK_FOLDER; skipped without them. Nothing is
                       changed there.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from credbroker.ports import SecretStore
from credbroker.secrets.cyberark import CcpAccount, CyberArkCcpStore
from credbroker.secrets.vault import VaultKV2Store
from tests.doubles.cyberark_ccp import Account, CcpDouble, Pki
from tests.doubles.vault import VaultDouble
from tests.openbao_server import VaultServer, admin_client

STORES = [
    "vault-double",
    "vault-double-approle",
    "embedded",
    "vault-real",
    "ccp-double",
    "ccp-real",
]
# The names tests pass to Subject.path(); a CCP store maps each to an account up front.
NAMES = ("missing", "creds", "existing")
KEY_FIELDS = {"access_key_id": "UserName", "secret_access_key": "Content"}

Owner = Callable[[str, Mapping[str, str]], Awaitable[None]]


@dataclass
class Subject:
    """A store under test plus unique secret paths for this test only.

    `owner` changes a secret the way its owner does: the broker's own write for a writable
    store, CyberArk's CPM for a CCP store; None when the suite cannot (a real CCP). `existing`
    names a path that already holds a key (a real CCP's given account)."""

    store: SecretStore
    writable: bool = True
    owner: Owner | None = None
    existing: str | None = None
    prefix: str = field(default_factory=lambda: f"credbroker-contract-{uuid.uuid4().hex[:12]}")
    used: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.owner is None and self.writable:
            store = self.store

            async def write(path: str, data: Mapping[str, str]) -> None:
                await store.write(path, data, cas=None)

            self.owner = write

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
    elif kind == "ccp-double":
        async for subject in _ccp_double(tmp_path):
            yield subject
    elif kind == "ccp-real":
        async for subject in _ccp_real():
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


async def _ccp_double(tmp_path: Path) -> AsyncIterator[Subject]:
    """The store presents its client certificate; the AppID accepts exactly that one."""
    pki = Pki(tmp_path / "pki")
    client = pki.issue("credbroker-contract")
    async with CcpDouble(pki) as ccp:
        safe = "MinIO-credbroker"
        ccp.add_application("credbroker", safes={safe}, certificates={client.fingerprint})
        prefix = f"credbroker-contract-{uuid.uuid4().hex[:12]}"
        objects = {f"{prefix}/{name}": f"obj-{name}" for name in NAMES}

        async def cpm(path: str, data: Mapping[str, str]) -> None:
            name = objects[path]
            props = {"UserName": data["access_key_id"], "Address": "minio.example"}
            if any((a.safe, a.name) == (safe, name) for a in ccp.accounts):
                ccp.cpm_change(safe, name, content=data["secret_access_key"], **props)
            else:
                ccp.add_account(Account(safe, name, data["secret_access_key"], props))

        existing = f"{prefix}/existing"
        await cpm(existing, {"access_key_id": "AKEXISTING", "secret_access_key": "s-existing"})
        store = CyberArkCcpStore(
            ccp.url,
            app_id="credbroker",
            accounts={
                path: CcpAccount(query={"Safe": safe, "Object": name}, fields=KEY_FIELDS)
                for path, name in objects.items()
            },
            check_path=existing,
            client_cert=client.cert_file,
            client_key=client.key_file,
            ca_file=pki.ca_file,
        )
        try:
            yield Subject(store, writable=False, owner=cpm, existing=existing, prefix=prefix)
        finally:
            await store.close()


async def _ccp_real() -> AsyncIterator[Subject]:
    env = os.environ
    missing = [
        name
        for name in ("CYBERARK_CCP_URL", "CYBERARK_APP_ID", "CYBERARK_SAFE", "CYBERARK_OBJECT")
        if not env.get(name)
    ]
    if missing:
        pytest.skip(f"no real CyberArk CCP: set {', '.join(missing)}")
    safe, folder = env["CYBERARK_SAFE"], env.get("CYBERARK_FOLDER")
    prefix = f"credbroker-contract-{uuid.uuid4().hex[:12]}"
    fields = {**KEY_FIELDS, "access_key_id": env.get("CYBERARK_ID_PROPERTY", "UserName")}
    accounts = {}
    for name in NAMES:
        # Only `existing` is the given account; the others name objects nobody created.
        obj = env["CYBERARK_OBJECT"] if name == "existing" else f"{prefix}-{name}"
        query = {"Safe": safe, "Object": obj} | ({"Folder": folder} if folder else {})
        accounts[f"{prefix}/{name}"] = CcpAccount(query=query, fields=fields)
    cert, key, ca = (env.get(f"CYBERARK_CCP_{n}") for n in ("CERT", "KEY", "CA"))
    store = CyberArkCcpStore(
        env["CYBERARK_CCP_URL"],
        app_id=env["CYBERARK_APP_ID"],
        accounts=accounts,
        check_path=f"{prefix}/existing",
        client_cert=Path(cert) if cert else None,
        client_key=Path(key) if key else None,
        ca_file=Path(ca) if ca else None,
        reason="credbroker contract suite",
    )
    try:
        yield Subject(store, writable=False, existing=f"{prefix}/existing", prefix=prefix)
    finally:
        await store.close()
