"""MinIO access keys (formerly service accounts) through minio-py's MinioAdmin, as a KeyDriver.

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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import MinioAdmin
from minio.credentials.providers import StaticProvider
from minio.error import MinioAdminException

from credbroker.domain import ServiceCredentials
from credbroker.errors import (
    ConfigError,
    ObjectStoreError,
    ObjectStoreRejected,
    ObjectStoreUnavailable,
)

log = logging.getLogger("credbroker.rotation.minio")

_T = TypeVar("_T")
AdminCredentials = Callable[[], Awaitable[ServiceCredentials]]


class _NotFound(ObjectStoreRejected):
    """HTTP 404 (MinIO: XMinioInvalidIAMCredentials, "The specified service account is not
    found"; the same answer for a key of another user, against brute force)."""


class MinioKeyDriver:
    kind = "minio"

    def __init__(
        self,
        *,
        endpoint: str,
        admin_credentials: AdminCredentials,
        region: str = "",
        verify_tls: bool = True,
        ca_file: str | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        parts = urlsplit(endpoint)
        self._server = parts.netloc
        self._secure = parts.scheme == "https"
        self._region = region
        self._verify_tls = verify_tls
        self._ca_file = ca_file
        self._admin_credentials = admin_credentials
        self._timeout = timeout_seconds

    async def list_keys(self, user: str) -> list[str]:
        text = await self._call("list access keys", user, lambda a: a.list_service_account(user))
        accounts = _json(text, "list access keys").get("accounts") or []
        return sorted(
            str(a["accessKey"])
            for a in accounts
            if isinstance(a, dict) and a.get("parentUser") == user and a.get("accessKey")
        )

    async def create_key(self, user: str) -> ServiceCredentials:
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
        if key_id not in await self.list_keys(user):
            await self._call("delete access key", user, lambda a: a.delete_service_account(key_id))
            raise ObjectStoreError(f"minio created access key {key_id}, but not for {user}")
        return ServiceCredentials(access_key_id=key_id, secret_access_key=secret)

    async def delete_key(self, user: str, key_id: str) -> None:
        if key_id not in await self.list_keys(user):
            return  # already gone, or never this user's
        with contextlib.suppress(_NotFound):  # deleted meanwhile: the goal is reached
            await self._call("delete access key", user, lambda a: a.delete_service_account(key_id))

    async def close(self) -> None:
        return None

    async def _call(self, action: str, user: str, op: Callable[[MinioAdmin], _T]) -> _T:
        admin_key = await self._admin_credentials()

        def run() -> _T:
            timeout = urllib3.Timeout(connect=self._timeout, read=self._timeout)
            http = urllib3.PoolManager(
                timeout=timeout,
                maxsize=2,
                cert_reqs="CERT_REQUIRED" if self._verify_tls else "CERT_NONE",
                ca_certs=self._ca_file or certifi.where(),
                retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[502, 503]),
            )
            admin = MinioAdmin(
                endpoint=self._server,
                credentials=StaticProvider(admin_key.access_key_id, admin_key.secret_access_key),
                region=self._region,
                secure=self._secure,
                cert_check=self._verify_tls,
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
            except ValueError:  # minio/crypto.py: the answer did not decrypt (MAC check failed)
                error = ObjectStoreError(f"minio admin {action} for {user}: undecryptable answer")
            finally:
                http.clear()
            raise error  # outside the handler: no chain keeps the minio/urllib3 exception

        return await asyncio.to_thread(run)


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
