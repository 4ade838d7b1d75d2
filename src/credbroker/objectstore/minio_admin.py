"""MinIO keys through minio-py's MinioAdmin, as KeyDrivers: access keys (formerly service
accounts, kind `minio`) for direct S3 use, and a pair of built-in users (kind `minio-users`,
MinioUserPairDriver below) for the STS parent key.

    GET    /minio/admin/v3/list-service-accounts?user=U      list_keys   (encrypted answer)
    PUT    /minio/admin/v3/add-service-account               create_key  (encrypted both ways)
    DELETE /minio/admin/v3/delete-service-account?accessKey=K delete_key

`mc admin accesskey ls|rm` shows and edits the same keys. Bodies are encrypted with the admin
secret (minio/crypto.py: Argon2id + AES-GCM); MinioAdmin does that. It is blocking (urllib3):
every call runs in a worker thread with its own short-timeout connection pool, cleared after.

Two MinIO facts shape this driver (minio/minio cmd/admin-handlers-users.go, sts-handlers.go):
- add-service-account creates the key for `targetUser`, or for the requester when it is absent,
  and minio-py sends no targetUser. So the admin credentials must be the managed user's own
  (a user may manage its own access keys without admin:CreateServiceAccount); create_key
  refuses other credentials before creating anything, and checks the new key's parent after.
- MinIO refuses AssumeRole signed by an access key ("Temporary credentials or Service accounts
  cannot generate further temporary credentials"). A key rotated here is for direct S3 use;
  config refuses `verify: sts` with this driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import string
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import MinioAdmin
from minio.credentials.providers import StaticProvider
from minio.crypto import encrypt
from minio.error import MinioAdminException
from minio.minioadmin import _COMMAND

from credbroker.domain import AccessKey
from credbroker.errors import (
    ConfigError,
    ObjectStoreError,
    ObjectStoreRejected,
    ObjectStoreUnavailable,
)
from credbroker.objectstore.tls import VERIFIED, TlsPolicy

log = logging.getLogger("credbroker.objectstore.minio_admin")

_T = TypeVar("_T")
AdminCredentials = Callable[[], Awaitable[AccessKey]]


class _NotFound(ObjectStoreRejected):
    """HTTP 404 (MinIO: XMinioInvalidIAMCredentials, "The specified service account is not
    found"; the same answer for a key of another user, against brute force)."""


class _MinioAdmin:
    """MinioAdmin calls in a worker thread, errors translated; shared by both drivers."""

    def __init__(
        self,
        *,
        endpoint: str,
        owner: str,
        admin_credentials: AdminCredentials,
        region: str = "",
        tls: TlsPolicy = VERIFIED,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.owner = owner  # KeyDriver.owner: the user, or the pair as "a+b"
        parts = urlsplit(endpoint)
        self._server = parts.netloc
        self._secure = parts.scheme == "https"
        self._region = region
        self._tls = tls
        self._admin_credentials = admin_credentials
        self._timeout = timeout_seconds

    async def close(self) -> None:
        return None

    async def _call(self, action: str, user: str, op: Callable[[MinioAdmin], _T]) -> _T:
        admin_key = await self._admin_credentials()

        def run() -> _T:
            timeout = urllib3.Timeout(connect=self._timeout, read=self._timeout)
            http = urllib3.PoolManager(
                timeout=timeout,
                maxsize=2,
                **self._tls.for_urllib3(),
                retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[502, 503]),
            )
            admin = MinioAdmin(
                endpoint=self._server,
                credentials=StaticProvider(admin_key.access_key_id, admin_key.secret_access_key),
                region=self._region,
                secure=self._secure,
                cert_check=self._tls.verify,
                http_client=http,
            )
            try:
                return op(admin)
            except MinioAdminException as exc:
                error: ObjectStoreError = _translate(action, user, exc)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                error = ObjectStoreUnavailable(
                    f"minio admin {action} for {user}: unreachable ({type(exc).__name__})"
                )
            except ValueError as exc:  # minio/crypto.py: the answer did not decrypt
                error = _undecryptable(action, user, exc)
            finally:
                http.clear()
            raise error  # outside the handler: no chain keeps the minio/urllib3 exception

        return await asyncio.to_thread(run)


# madmin-go encrypt.go: answers start with a 32-byte salt and one AEAD id byte; a FIPS build
# encrypts with id 0x02 (PBKDF2-SHA256 + AES-GCM), which minio/crypto.py's _get_cipher refuses
# as "Unknown AEAD ID 2" (it knows 0x00 Argon2id+AES-GCM and 0x01 Argon2id+ChaCha20 only).
# Requests are fine: MinIO decrypts all three formats whatever its build.
_FIPS_AEAD_REFUSAL = "Unknown AEAD ID 2"


def _undecryptable(action: str, user: str, exc: ValueError) -> ObjectStoreError:
    if str(exc) == _FIPS_AEAD_REFUSAL:
        return ObjectStoreError(
            f"minio admin {action} for {user}: the server encrypts admin answers as a FIPS "
            "build does (format 0x02, PBKDF2 + AES-GCM), which minio-py cannot decrypt; "
            "rotate this key by hand (runbooks/06-rotation.md) until it can",
            code="minio_fips_admin_encryption",
        )
    # A MAC check failure: the answer was not encrypted with the admin key's secret.
    return ObjectStoreError(f"minio admin {action} for {user}: undecryptable answer")


class MinioKeyDriver(_MinioAdmin):
    kind = "minio"
    fixed_keys = False

    async def list_keys(self) -> list[str]:
        user = self.owner
        text = await self._call("list access keys", user, lambda a: a.list_service_account(user))
        accounts = _json(text, "list access keys").get("accounts") or []
        return sorted(
            str(a["accessKey"])
            for a in accounts
            if isinstance(a, dict) and a.get("parentUser") == user and a.get("accessKey")
        )

    async def create_key(self, *, keep: str | None = None) -> AccessKey:
        user = self.owner
        if (await self._admin_credentials()).access_key_id != user:
            # The key would land under the requester (no targetUser), where this driver could
            # neither see nor clean it up: refuse before creating anything.
            raise ConfigError(
                f"minio: the admin credentials for {user} must be {user}'s own keys (access "
                "key = user name): minio-py sends no targetUser"
            )
        text = await self._call(
            "create access key",
            user,
            lambda a: a.add_service_account(description="credbroker rotation"),
        )
        created = _json(text, "create access key").get("credentials") or {}
        key_id, secret = created.get("accessKey"), created.get("secretKey")
        if not (isinstance(key_id, str) and key_id and isinstance(secret, str) and secret):
            raise ObjectStoreError(f"minio create access key for {user}: unexpected answer")
        if key_id not in await self.list_keys():
            await self._call("delete access key", user, lambda a: a.delete_service_account(key_id))
            raise ObjectStoreError(f"minio created access key {key_id}, but not for {user}")
        return AccessKey(access_key_id=key_id, secret_access_key=secret)

    async def delete_key(self, key_id: str) -> None:
        user = self.owner
        if key_id not in await self.list_keys():
            return  # already gone, or never this user's
        with contextlib.suppress(_NotFound):  # deleted meanwhile: the goal is reached
            await self._call("delete access key", user, lambda a: a.delete_service_account(key_id))


_SECRET_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 40  # MinIO's maximum secret key length


def new_secret() -> str:
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))


def pair_label(users: Sequence[str]) -> str:
    """The `user` a pair credential is known by (status, logs, the Rotator's calls)."""
    return "+".join(sorted(users))


class MinioUserPairDriver(_MinioAdmin):
    """The STS parent key on MinIO: two built-in users with the same policy, used in turn
    (dual accounts). A user's access key is its name and it has exactly one secret, so a
    "key" here is a user, and it never goes away:

        PUT  /minio/admin/v3/add-user?accessKey=U   {"status":"enabled","secretKey":S}, encrypted
        GET  /minio/admin/v3/list-users             list_keys (the pair members that exist)
        GET  /minio/admin/v3/user-info?accessKey=U  status and policies of the standby
        POST /minio/admin/v3/idp/builtin/policy/attach   only if `policy` is missing

    create_key(keep=K) gives the other user a fresh random secret (enabled) and makes sure it
    has `policy`; delete_key(U) gives U a random secret that is never kept anywhere. The admin
    credentials are a third identity with admin:CreateUser, admin:ListUsers, admin:GetUser and
    admin:AttachUserOrGroupPolicy (vendor/minio/setup.sh): a user may change only its own
    secret, and the pair members must stay plain parents.

    Why a retire scrambles the secret instead of disabling or removing the user (minio/minio
    cmd/iam-store.go, read 2026-11):
    - IAMStoreSys.DeleteUser "Delete[s] any STS and service account derived from this
      credential first": removing the user would kill every key vended from it at once.
    - iamCache.policyDBGet: "When looking for a user's policies, we also check if the user ...
      [is] enabled"; a disabled (invalid) user yields no policies, and STS credentials are
      authorised through their parent user's policies: disabling would deny them all too.
    - IAMStoreSys.AddUser (what add-user does to an existing user) only replaces the user's own
      identity (secret, status); derived STS credentials are left alone, and their session
      tokens are signed with the deployment's token signing key (getTokenSigningKey, the root
      secret), not the parent's secret. So keys vended before a rotation work until they
      expire, while AssumeRole signed with the old secret fails with SignatureDoesNotMatch.
    A scramble sends the user's current status, so a user an operator disabled stays disabled,
    and a rotation refuses to enable a disabled standby (runbooks/03-revoke-a-client.md).
    """

    kind = "minio-users"
    fixed_keys = True

    def __init__(
        self,
        *,
        users: Sequence[str],
        policy: str | None,
        endpoint: str,
        admin_credentials: AdminCredentials,
        region: str = "",
        tls: TlsPolicy = VERIFIED,
        timeout_seconds: float = 10.0,
    ) -> None:
        super().__init__(
            endpoint=endpoint,
            owner=pair_label(users),
            admin_credentials=admin_credentials,
            region=region,
            tls=tls,
            timeout_seconds=timeout_seconds,
        )
        if len(set(users)) != 2:
            raise ConfigError("minio-users: exactly two different users")
        self.users = tuple(sorted(users))
        self._policy = policy

    async def list_keys(self) -> list[str]:
        text = await self._call("list users", self.owner, lambda a: a.user_list())
        existing = _json(text, "list users")
        return [u for u in self.users if u in existing]

    async def create_key(self, *, keep: str | None = None) -> AccessKey:
        if keep not in self.users:
            raise ConfigError(
                f"minio-users: the secret store holds key {keep}, which is not a user of the "
                f"pair {self.owner}; nothing was changed"
            )
        standby = self.users[1] if keep == self.users[0] else self.users[0]
        if (await self._admin_credentials()).access_key_id in self.users:
            # Scrambling the admin's own secret would lock the driver out of the pair.
            raise ConfigError("minio-users: the admin credentials must not be a pair member")
        before = _json(
            await self._call("user info", standby, lambda a: a.user_info(standby)), "user info"
        )
        if before.get("status") == "disabled":
            # Disabled by an operator (runbooks/03, a leaked key): enabling it would revive
            # every key it vended. The rotation waits for a person.
            raise ObjectStoreRejected(
                f"minio-users: standby user {standby} is disabled, so enabling it now could "
                "revive keys it vended; enable it by hand once they have expired "
                "(runbooks/03-revoke-a-client.md). Nothing was changed",
                aws_code="XMinioUserDisabled",
            )
        secret = new_secret()
        await self._call("set secret", standby, lambda a: a.user_add(standby, secret))
        info = _json(
            await self._call("user info", standby, lambda a: a.user_info(standby)), "user info"
        )
        if info.get("status") != "enabled":
            raise ObjectStoreError(f"minio user {standby} is not enabled after add-user")
        policies = [p for p in str(info.get("policyName") or "").split(",") if p]
        policy = self._policy
        if policy is not None and policy not in policies:
            await self._call(
                "attach policy", standby, lambda a: a.attach_policy([policy], user=standby)
            )
        log.info("minio-users: %s has a new secret (standby of %s)", standby, keep)
        return AccessKey(access_key_id=standby, secret_access_key=secret)

    async def delete_key(self, key_id: str) -> None:
        if key_id not in await self.list_keys():
            return  # not a pair member, or removed by hand: never create a user here
        info = _json(
            await self._call("user info", key_id, lambda a: a.user_info(key_id)), "user info"
        )
        # A user an operator disabled (runbooks/03: cutting off a leaked key) stays disabled:
        # add-user sets the status it is given, and enabling would revive its vended keys.
        status = "disabled" if info.get("status") == "disabled" else "enabled"
        await self._call(
            "scramble secret", key_id, lambda a: _set_secret(a, key_id, new_secret(), status)
        )  # the random secret is generated inside the call and never kept


def _set_secret(admin: MinioAdmin, user: str, secret: str, status: str) -> None:
    """PUT /minio/admin/v3/add-user?accessKey=U {"secretKey", "status"}, encrypted: what
    MinioAdmin.user_add sends (minio 7.2), with the status given instead of always enabled."""
    body = json.dumps({"status": status, "secretKey": secret}).encode()
    admin._url_open(
        method="PUT",
        command=_COMMAND.ADD_USER,
        query_params={"accessKey": user},
        body=encrypt(body, admin._provider.retrieve().secret_key),
    )


def _json(text: str, action: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ObjectStoreError(f"minio admin {action}: answer is not a JSON object")
    return value


def _translate(action: str, user: str, exc: MinioAdminException) -> ObjectStoreError:
    # The exception holds the HTTP status and MinIO's JSON error body; only its Code is kept.
    status = str(getattr(exc, "_code", ""))
    try:
        code = str(json.loads(getattr(exc, "_body", "") or "{}").get("Code", ""))
    except (ValueError, AttributeError):
        code = ""
    message = f"minio admin {action} for {user}: HTTP {status} {code}".rstrip()
    if status.startswith("5") or status == "429":
        return ObjectStoreUnavailable(message)
    if status == "404":
        return _NotFound(message, aws_code=code)
    return ObjectStoreRejected(message, aws_code=code)
