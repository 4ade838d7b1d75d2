"""VaultKV2Store with AppRole auth against a real Vault API (the `real_vault` fixture).

An operator's setup, done with hvac and the admin token: enable AppRole, write the broker's
policy (vendor/vault/credbroker.hcl; an equivalent inline policy if that file is missing),
create the role with token_policies, read its role_id and issue a secret_id. The broker's store
must then read and write (check-and-set) under credbroker/object-store/, be refused everywhere
else, and log in again after its token is revoked. Last, vendor/vault/approle-setup.sh runs as
written, with `vault` being OpenBao's `bao` (same CLI).

Every name is unique (auth mounts, policies, secret paths) and removed afterwards, so this can
also run against a shared Vault named by VAULT_ADDR / VAULT_TOKEN. That token must be an
operator's: it needs sys/auth, sys/policies and sys/leases (sudo).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from credbroker.errors import CasMismatch, SecretStoreError, SecretStorePermissionDenied
from credbroker.secrets.vault import VaultKV2Store
from tests.openbao_server import VaultServer, admin_client, find_bao

REPO_ROOT = Path(__file__).resolve().parents[2]
VENDOR_POLICY = REPO_ROOT / "vendor" / "vault" / "credbroker.hcl"
SETUP_SCRIPT = REPO_ROOT / "vendor" / "vault" / "approle-setup.sh"
ROLE = "credbroker"
# Used only if vendor/vault/credbroker.hcl is missing: the same grants.
FALLBACK_POLICY = """
path "secret/data/credbroker/object-store/*" {
  capabilities = ["read", "create", "update"]
}
path "secret/metadata/credbroker/object-store/*" {
  capabilities = ["read"]
}
"""


def broker_policy(kv_mount: str) -> str:
    text = VENDOR_POLICY.read_text() if VENDOR_POLICY.exists() else FALLBACK_POLICY
    # credbroker.hcl: "If the mount is not "secret", replace the first path segment."
    return text.replace('path "secret/', f'path "{kv_mount}/')


@dataclass
class AppRoleSetup:
    server: VaultServer
    admin: Any  # hvac.Client with the admin token
    suffix: str
    auth_mount: str
    role_id: str = field(repr=False)
    secret_id: str = field(repr=False)
    paths: list[str] = field(default_factory=list)  # deleted at the end

    def inside(self, name: str) -> str:
        """A fresh path the broker's policy covers."""
        return self.track(f"credbroker/object-store/test-{self.suffix}/{name}")

    def track(self, path: str) -> str:
        self.paths.append(path)
        return path

    def admin_write(self, path: str, data: dict[str, str]) -> None:
        self.admin.secrets.kv.v2.create_or_update_secret(
            path, secret=data, mount_point=self.server.mount
        )

    def admin_read(self, path: str) -> tuple[int, dict[str, str]]:
        body = self.admin.secrets.kv.v2.read_secret_version(
            path, mount_point=self.server.mount, raise_on_deleted_version=True
        )
        return body["data"]["metadata"]["version"], body["data"]["data"]

    def login_leases(self) -> set[str]:
        """Leases of the tokens this AppRole mount has issued and that are still valid."""
        try:
            body = self.admin.sys.list_leases(f"auth/{self.auth_mount}/login/")
        except hvac.exceptions.InvalidPath:  # 404: no lease left under the prefix
            return set()
        return set(body["data"]["keys"])


def approle_store(
    server: VaultServer, auth_mount: str, role_id: str, secret_id: str
) -> VaultKV2Store:
    return VaultKV2Store(
        server.addr,
        mount_point=server.mount,
        approle_role_id=role_id,
        approle_secret_id=secret_id,
        approle_mount=auth_mount,
        namespace=server.namespace,
        verify=server.verify,
    )


def remove(server: VaultServer, admin: Any, auth_mount: str, policy: str, paths: list[str]) -> None:
    """Undo a setup: secrets, then the auth mount (revoking its tokens), then the policy."""
    for path in set(paths):
        admin.secrets.kv.v2.delete_metadata_and_all_versions(path, mount_point=server.mount)
    admin.sys.disable_auth_method(auth_mount)
    admin.sys.delete_policy(policy)


@pytest.fixture(scope="module")
def approle(real_vault: VaultServer) -> Iterator[AppRoleSetup]:
    admin = admin_client(real_vault)
    suffix = uuid.uuid4().hex[:10]
    auth_mount, policy = f"approle-credbroker-{suffix}", f"credbroker-test-{suffix}"
    paths: list[str] = []
    try:
        admin.sys.enable_auth_method("approle", path=auth_mount)
        admin.sys.create_or_update_policy(policy, broker_policy(real_vault.mount))
        admin.auth.approle.create_or_update_approle(
            ROLE,
            token_policies=[policy],
            token_ttl="1h",
            token_max_ttl="4h",
            token_type="service",
            secret_id_num_uses=0,
            mount_point=auth_mount,
        )
        role_id = admin.auth.approle.read_role_id(ROLE, mount_point=auth_mount)["data"]["role_id"]
        secret_id = admin.auth.approle.generate_secret_id(ROLE, mount_point=auth_mount)["data"][
            "secret_id"
        ]
        yield AppRoleSetup(real_vault, admin, suffix, auth_mount, role_id, secret_id, paths)
    finally:
        try:
            remove(real_vault, admin, auth_mount, policy, paths)
        finally:
            admin.adapter.close()


@pytest.fixture
async def broker_store(approle: AppRoleSetup) -> AsyncIterator[VaultKV2Store]:
    store = approle_store(approle.server, approle.auth_mount, approle.role_id, approle.secret_id)
    try:
        yield store
    finally:
        await store.close()


def test_the_server_serves_kv_v2_at_its_mount(approle: AppRoleSetup) -> None:
    mounts = approle.admin.sys.list_mounted_secrets_engines()["data"]
    mount = mounts[f"{approle.server.mount}/"]
    assert (mount["type"], mount["options"]["version"]) == ("kv", "2")


async def test_the_broker_reads_and_writes_its_path_with_check_and_set(
    approle: AppRoleSetup, broker_store: VaultKV2Store
) -> None:
    path = approle.inside("service")
    keys = {"access_key_id": "AK2", "secret_access_key": "SK2"}

    assert await broker_store.write(path, {"access_key_id": "AK1"}, cas=0) == 1
    assert await broker_store.write(path, keys, cas=1) == 2
    with pytest.raises(CasMismatch):
        await broker_store.write(path, {"access_key_id": "stale"}, cas=1)
    with pytest.raises(CasMismatch):
        await broker_store.write(path, {"access_key_id": "again"}, cas=0)

    secret = await broker_store.read(path)
    assert (secret.version, dict(secret.data)) == (2, keys)
    await broker_store.check()  # lookup-self: the built-in "default" policy grants it


async def test_a_cas_required_key_refuses_a_write_without_cas_and_it_is_not_a_lost_race(
    approle: AppRoleSetup, broker_store: VaultKV2Store
) -> None:
    path = approle.inside("guarded")
    approle.admin_write(path, {"k": "v1"})
    approle.admin.secrets.kv.v2.update_metadata(
        path, cas_required=True, mount_point=approle.server.mount
    )

    with pytest.raises(SecretStoreError) as refused:
        await broker_store.write(path, {"k": "v2"}, cas=None)

    assert type(refused.value) is SecretStoreError  # neither CasMismatch nor PermissionDenied
    assert await broker_store.write(path, {"k": "v2"}, cas=1) == 2


@pytest.mark.parametrize(
    "template",
    [
        "credbroker/object-store-{suffix}/service",  # shares the policy's prefix as a string
        "credbroker/other-{suffix}/service",
        "other-app-{suffix}/service",
    ],
)
async def test_the_broker_is_denied_outside_its_path(
    approle: AppRoleSetup, broker_store: VaultKV2Store, template: str
) -> None:
    path = approle.track(template.format(suffix=approle.suffix))
    approle.admin_write(path, {"k": "operator"})

    with pytest.raises(SecretStorePermissionDenied):
        await broker_store.read(path)
    with pytest.raises(SecretStorePermissionDenied):
        await broker_store.write(path, {"k": "broker"}, cas=1)

    assert approle.admin_read(path) == (1, {"k": "operator"})


async def test_a_revoked_token_is_replaced_by_a_new_login(
    approle: AppRoleSetup, broker_store: VaultKV2Store
) -> None:
    path = approle.inside("relogin")
    await broker_store.write(path, {"k": "v1"}, cas=0)  # the first call logs in
    before = approle.login_leases()
    assert before

    # The operator revokes every token this AppRole mount has issued.
    approle.admin.sys.revoke_prefix(f"auth/{approle.auth_mount}/login")
    assert approle.login_leases() == set()

    secret = await broker_store.read(path)  # 403 with the old token, one new login, retried

    assert dict(secret.data) == {"k": "v1"}
    after = approle.login_leases()
    assert len(after) == 1 and not after & before


async def test_the_vendor_setup_script_works_as_written(
    real_vault: VaultServer, tmp_path: Path
) -> None:
    if not SETUP_SCRIPT.exists():
        pytest.skip(f"{SETUP_SCRIPT.relative_to(REPO_ROOT)} does not exist")
    bao = find_bao()
    if bao is None:
        pytest.skip("no `bao` CLI to stand in for `vault`: install the dev extra")
    if real_vault.mount != "secret":
        pytest.skip("credbroker.hcl, which the script installs, names the mount `secret`")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "vault").symlink_to(bao)
    suffix = uuid.uuid4().hex[:10]
    auth_mount, policy = f"approle-script-{suffix}", f"credbroker-script-{suffix}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env |= {
        "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),  # no ~/.vault-token from the token helper
        "VAULT_ADDR": real_vault.addr,
        "VAULT_TOKEN": real_vault.token,
        "APPROLE_MOUNT": auth_mount,
        "POLICY": policy,
    }
    if real_vault.namespace:
        env["VAULT_NAMESPACE"] = real_vault.namespace
    if isinstance(real_vault.verify, str):
        env["VAULT_CACERT"] = real_vault.verify
    admin = admin_client(real_vault)
    path = f"credbroker/object-store/test-{suffix}/script"
    try:
        proc = subprocess.run(
            ["bash", str(SETUP_SCRIPT)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        printed = dict(
            line.split("=", 1)
            for line in proc.stdout.splitlines()
            if line.startswith(("role_id=", "wrapping_token="))
        )
        assert printed.keys() == {"role_id", "wrapping_token"}

        role = admin.auth.approle.read_role(ROLE, mount_point=auth_mount)["data"]
        assert role["token_policies"] == [policy]
        assert role["secret_id_num_uses"] == 0
        assert role["token_no_default_policy"] is False
        unwrapper = hvac.Client(
            url=real_vault.addr,
            token=printed["wrapping_token"],
            namespace=real_vault.namespace,
            verify=real_vault.verify,
        )
        try:
            secret_id = unwrapper.sys.unwrap()["data"]["secret_id"]
        finally:
            unwrapper.adapter.close()

        store = approle_store(real_vault, auth_mount, printed["role_id"], secret_id)
        try:
            assert await store.write(path, {"access_key_id": "AK"}, cas=0) == 1
            assert dict((await store.read(path)).data) == {"access_key_id": "AK"}
            with pytest.raises(SecretStorePermissionDenied):
                await store.read(f"credbroker/other-{suffix}/service")
        finally:
            await store.close()
    finally:
        try:
            remove(real_vault, admin, auth_mount, policy, [path])
        finally:
            admin.adapter.close()
