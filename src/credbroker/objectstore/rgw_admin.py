"""Ceph RGW user keys through the admin ops API (PyPI rgwadmin), as a KeyDriver.

    GET    /admin/user?uid=U                      list_keys    the user's S3 keys
    PUT    /admin/user?key&uid=U&generate-key=True create_key   RGW generates id and secret
    DELETE /admin/user?key&uid=U&access-key=K     delete_key   only if K belongs to U

rgwadmin is blocking (`requests`): every call runs in a worker thread, never on the event loop.
The admin keys are read from the secret store for every call (a human may rotate them), and
each call builds its own RGWAdmin without a pooled session, so nothing stays open.

RGW answers some of these with secrets: user info and create-key list every key of the user
*with its secret*. Secrets other than the one new key are dropped here, at once; messages and
logs carry the action, the user, key ids and RGW's error code only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from rgwadmin.exceptions import RGWAdminException, ServerDown
from rgwadmin.rgw import RGWAdmin

from credbroker.domain import AccessKey
from credbroker.errors import ObjectStoreError, ObjectStoreRejected, ObjectStoreUnavailable
from credbroker.objectstore.tls import VERIFIED, TlsPolicy

log = logging.getLogger("credbroker.objectstore.rgw_admin")

_T = TypeVar("_T")
_RGWAdmin: Any = RGWAdmin  # rgwadmin ships py.typed but leaves its methods untyped
AdminCredentials = Callable[[], Awaitable[AccessKey]]


class RgwKeyDriver:
    kind = "rgw"
    fixed_keys = False

    def __init__(
        self,
        *,
        endpoint: str,
        user: str,
        admin_credentials: AdminCredentials,
        tls: TlsPolicy = VERIFIED,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.owner = user
        parts = urlsplit(endpoint)
        self._server = parts.netloc
        self._secure = parts.scheme == "https"
        self._verify = tls.for_requests()
        self._admin_credentials = admin_credentials
        self._timeout = timeout_seconds

    async def list_keys(self) -> list[str]:
        user = self.owner
        info = await self._call("list keys", user, lambda admin: admin.get_user(uid=user))
        return sorted(_key_ids(info.get("keys", []) if isinstance(info, dict) else [], user))

    async def create_key(self, *, keep: str | None = None) -> AccessKey:
        user = self.owner
        before = set(await self.list_keys())
        keys = await self._call(
            "create key",
            user,
            lambda admin: admin.create_key(uid=user, key_type="s3", generate_key=True),
        )
        fresh = [
            k
            for k in (keys if isinstance(keys, list) else [])
            if isinstance(k, dict) and k.get("user") == user and k.get("access_key") not in before
        ]
        if len(fresh) != 1:
            # Someone else added a key at the same moment, or RGW answered oddly: the run
            # fails and the next one deletes whatever is not in the secret store.
            raise ObjectStoreError(f"rgw create key for {user}: found {len(fresh)} new keys")
        return AccessKey(
            access_key_id=str(fresh[0]["access_key"]),
            secret_access_key=str(fresh[0]["secret_key"]),
        )

    async def delete_key(self, key_id: str) -> None:
        user = self.owner
        if key_id not in await self.list_keys():
            return  # already gone, or never this user's: nothing of ours to delete
        try:
            await self._call(
                "delete key",
                user,
                lambda admin: admin.remove_key(access_key=key_id, key_type="s3", uid=user),
            )
        except ObjectStoreRejected as exc:
            if exc.aws_code != "InvalidAccessKeyId":  # RGW's answer for a key already gone
                raise

    async def close(self) -> None:
        return None

    async def _call(self, action: str, user: str, op: Callable[[Any], _T]) -> _T:
        admin_key = await self._admin_credentials()

        def run() -> _T:
            admin = _RGWAdmin(
                access_key=admin_key.access_key_id,
                secret_key=admin_key.secret_access_key,
                server=self._server,
                secure=self._secure,
                verify=self._verify,
                timeout=self._timeout,
            )
            try:
                return op(admin)
            except RGWAdminException as exc:
                error: ObjectStoreError = _rejected(action, user, exc)
            except requests.RequestException as exc:
                error = ObjectStoreUnavailable(
                    f"rgw admin {action} for {user}: unreachable ({type(exc).__name__})"
                )
            raise error  # outside the handler: no chain keeps the rgwadmin/requests exception

        result = await asyncio.to_thread(run)
        log.debug("rgw admin %s for %s: ok", action, user)
        return result


def _key_ids(keys: list[Any], user: str) -> list[str]:
    # Subuser keys carry "uid:subuser" in `user`; only the user's own S3 keys are managed.
    return [
        str(k["access_key"])
        for k in keys
        if isinstance(k, dict) and k.get("user") == user and k.get("access_key")
    ]


def _rejected(action: str, user: str, exc: RGWAdminException) -> ObjectStoreError:
    code = str(exc.code) if exc.code else ""
    if isinstance(exc, ServerDown) or code in ("InternalError", "ServiceUnavailable"):
        return ObjectStoreUnavailable(f"rgw admin {action} for {user}: {code or 'server down'}")
    return ObjectStoreRejected(f"rgw admin {action} for {user}: {code}", aws_code=code)
