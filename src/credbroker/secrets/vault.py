"""HashiCorp Vault KV v2 secret store, on top of hvac.

hvac is synchronous (`requests`), so every hvac call runs in this store's own bounded thread
pool and never on the event loop. Endpoints used, all under /v1 and with X-Vault-Namespace
when a namespace is configured:

    GET  /{mount}/data/{path}          read()    current version
    GET  /{mount}/data/{path}?version=N  read_version()  an older version (rotation)
    POST /{mount}/data/{path}          write()   new version, `options.cas` when asked
    GET  /auth/token/lookup-self       check()   the token works and Vault is unsealed
    POST /auth/{approle_mount}/login   AppRole   on first use, and once more after a 403

Every failure is translated exactly once, in `_translate`, into the credbroker error tree.
Messages and log lines carry the action, the secret path and the HTTP status only: never a
token, a secret_id, a secret value or a response body (hvac puts response text into its
exceptions, and a misbehaving proxy may echo request headers there). The translated error is
raised outside the `except` block, so neither `__cause__` nor `__context__` keeps the hvac or
requests exception alive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import hvac
import hvac.adapters
import hvac.exceptions
import requests
import requests.adapters

from credbroker.domain import SecretVersion
from credbroker.errors import (
    CasMismatch,
    ConfigError,
    InvalidRequest,
    SecretNotFound,
    SecretStoreError,
    SecretStorePermissionDenied,
    SecretStoreUnavailable,
)

logger = logging.getLogger("credbroker.secrets.vault")

_T = TypeVar("_T")

# hvac raises one exception class per status (hvac/exceptions.py, VaultError.from_status).
# _StatusAdapter records the exact status; this table is the fallback for anything it missed.
_STATUS_BY_CLASS: dict[type[Exception], int] = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}
# Vault's KV v2 plugin (path_data.go, validateCheckAndSetOption) answers a cas mismatch with
# HTTP 400 and exactly this error. "check-and-set parameter required for this call" (a mount
# with cas_required) is a configuration problem, not a lost race, so match the full phrase.
_CAS_MISMATCH = "check-and-set parameter did not match the current version"


class _StatusAdapter(hvac.adapters.JSONAdapter):  # type: ignore[misc]
    """hvac's JSON adapter, except that a raised VaultError remembers its HTTP status.

    hvac maps unlisted statuses (504, 505, ...) to UnexpectedError and drops the number; we
    need it to tell an outage (5xx) from a refusal.
    """

    def _raise_for_error(self, method: str, url: str, response: requests.Response) -> None:
        try:
            super()._raise_for_error(method, url, response)
        except hvac.exceptions.VaultError as exc:
            exc.credbroker_status = response.status_code
            raise


class _LoginRefused(Exception):
    """The AppRole login itself was refused: wrong role_id/secret_id or a policy problem."""

    def __init__(self, status: int | None) -> None:
        super().__init__(status)
        self.status = status


class VaultKV2Store:
    """SecretStore on a Vault KV v2 mount, authenticated by a token or by AppRole.

    One hvac.Client (one requests session, a pool sized to the workers) per store. The
    session is shared by the worker threads: they all talk to one host and use no cookies or
    redirects state, and the urllib3 pool is thread-safe. The token is the only mutable
    state; AppRole logins are serialized by a lock.

    `timeout_seconds` bounds each HTTP connect and each read. A call as a whole is also
    bounded (4 x timeout + 1 s: login, request, re-login, retry) against what requests cannot
    time out, such as DNS resolution. A write that times out may or may not have happened;
    retry it with `cas` to stay safe.
    """

    kind = "vault"
    writable = True

    def __init__(
        self,
        url: str,
        *,
        mount_point: str = "secret",
        token: str | None = None,
        approle_role_id: str | None = None,
        approle_secret_id: str | None = None,
        approle_mount: str = "approle",
        namespace: str | None = None,
        verify: bool | str = True,
        timeout_seconds: float = 5.0,
        max_workers: int = 4,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError("vault url must start with http:// or https://")
        approle = approle_role_id is not None or approle_secret_id is not None
        if approle and not (approle_role_id and approle_secret_id):
            raise ConfigError("vault AppRole needs both role_id and secret_id")
        if approle == bool(token):
            raise ConfigError("vault needs exactly one of a token or AppRole credentials")
        if timeout_seconds <= 0 or max_workers < 1:
            raise ConfigError("vault timeout_seconds must be > 0 and max_workers >= 1")
        self._url = url
        self._mount = _checked_mount(mount_point)
        self._namespace = namespace
        self._approle = (approle_role_id, approle_secret_id) if approle else None
        self._approle_mount = _checked_mount(approle_mount)
        self._deadline = 4 * timeout_seconds + 1.0
        self._closed = False
        self._login_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="credbroker-vault")

        session = requests.Session()
        session.verify = verify
        pool = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max_workers)
        session.mount("http://", pool)
        session.mount("https://", pool)
        # token="" (never None): with None, hvac falls back to VAULT_TOKEN or ~/.vault-token.
        self._client: Any = hvac.Client(
            url=url,
            token="",
            verify=verify,
            timeout=timeout_seconds,
            session=session,
            adapter=_StatusAdapter,
            namespace=namespace,
        )
        self._client.token = token or None

    def __repr__(self) -> str:
        auth = "approle" if self._approle else "token"
        return (
            f"VaultKV2Store(url={self._url!r}, mount_point={self._mount!r}, "
            f"namespace={self._namespace!r}, auth={auth!r})"
        )

    # --- the SecretStore protocol ---------------------------------------------------------

    async def read(self, path: str) -> SecretVersion:
        """Current version of `path`: GET /v1/{mount}/data/{path}.

        A missing, deleted or destroyed version (HTTP 404) raises SecretNotFound.
        """
        _checked_path(path)

        def op() -> SecretVersion:
            body = self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self._mount, raise_on_deleted_version=True
            )
            return _parse_read(body, path)

        return await self._run("read", path, op)

    async def read_version(self, path: str, version: int) -> SecretVersion:
        """One older version of `path`: GET /v1/{mount}/data/{path}?version=N.

        Rotation uses it to prove the key it replaced is rejected. A version deleted,
        destroyed or pruned by the mount's max_versions raises SecretNotFound.
        """
        _checked_path(path)
        if version < 1:
            raise InvalidRequest("version must be >= 1")

        def op() -> SecretVersion:
            body = self._client.secrets.kv.v2.read_secret_version(
                path=path, version=version, mount_point=self._mount, raise_on_deleted_version=True
            )
            return _parse_read(body, path)

        return await self._run("read", path, op)

    async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
        """Write a new version: POST /v1/{mount}/data/{path} with {"data", "options": {"cas"}}.

        `cas`: None writes unconditionally (no cas option sent); 0 only creates; N only if the
        current version is N. Returns the version Vault created.
        """
        _checked_path(path)
        if cas is not None and cas < 0:
            raise InvalidRequest("cas must be None or a version number >= 0")
        secret = {str(key): str(value) for key, value in data.items()}

        def op() -> int:
            body = self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=secret, cas=cas, mount_point=self._mount
            )
            return _parse_write(body, path)

        return await self._run("write", path, op)

    async def check(self) -> None:
        """Prove the store can serve reads: GET /v1/auth/token/lookup-self.

        Authenticated, cheap and read-only: it fails when Vault is unreachable, sealed (503)
        or the token is no longer valid (403). sys/health was not chosen: it is
        unauthenticated, so a revoked token would pass, and it answers 429 on a healthy
        standby, which hvac turns into RateLimitExceeded. The response holds the token
        itself, so it is dropped unread.
        """

        def op() -> None:
            body = self._client.auth.token.lookup_self()
            if not isinstance(body, dict):
                raise SecretStoreError("vault check: unexpected response")

        await self._run("check", "auth/token/lookup-self", op)

    async def close(self) -> None:
        """Stop the worker pool (waiting for calls in flight) and close the HTTP session."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        # Not in our own pool: shutdown(wait=True) from one of its workers would wait forever.
        try:
            await asyncio.wait_for(loop.run_in_executor(None, self._shutdown), self._deadline)
        except TimeoutError:
            logger.warning("vault store closed while calls were still in flight")

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._client.adapter.close()

    # --- running hvac off the event loop --------------------------------------------------

    async def _run(self, action: str, path: str, op: Callable[[], _T]) -> _T:
        if self._closed:
            raise SecretStoreError(f"vault {action} of {path!r}: the store is closed")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._call, action, path, op)
        try:
            async with asyncio.timeout(self._deadline):
                return await future
        except TimeoutError:
            pass  # raised below, outside the handler, so no exception chain is kept
        error = SecretStoreUnavailable(
            f"vault {action} of {path!r}: no answer within {self._deadline:g}s"
        )
        _log(error, "deadline")
        raise error

    def _call(self, action: str, path: str, op: Callable[[], _T]) -> _T:
        """In a worker thread: authenticate, run `op`, translate any failure exactly once."""
        try:
            return self._authenticated(op)
        except Exception as exc:  # every failure is translated; nothing else escapes
            error = _translate(exc, action, path)
            cause = type(exc).__name__
        _log(error, cause)
        raise error

    def _authenticated(self, op: Callable[[], _T]) -> _T:
        if self._approle is None:
            return op()
        used = self._client.token or self._login(stale=None)
        try:
            return op()
        except hvac.exceptions.Forbidden:
            pass  # the token may have expired or been revoked: log in again, once
        self._login(stale=used)
        return op()

    def _login(self, *, stale: str | None) -> str:
        """POST /v1/auth/{approle_mount}/login; returns the new token (kept on the client)."""
        assert self._approle is not None
        role_id, secret_id = self._approle
        with self._login_lock:
            current: str | None = self._client.token
            if current and current != stale:
                return current  # another worker logged in while we waited
            self._client.token = None  # never send the stale token along with the login
            try:
                self._client.auth.approle.login(
                    role_id=role_id, secret_id=secret_id, mount_point=self._approle_mount
                )
            except hvac.exceptions.VaultError as exc:
                status = _status_of(exc)
                if status not in (400, 401, 403):
                    raise
                refused = _LoginRefused(status)
            else:
                token = self._client.token
                if isinstance(token, str) and token:
                    return token
                refused = _LoginRefused(None)
        raise refused


# --- translation: the one place that maps failures onto the error tree -----------------------


def _translate(exc: Exception, action: str, path: str) -> SecretStoreError:
    what = f"vault {action} of {path!r}"
    if isinstance(exc, SecretStoreError):
        return exc  # built by this module from a response shape, already safe
    if isinstance(exc, _LoginRefused):
        reason = f"HTTP {exc.status}" if exc.status else "no token in the response"
        return SecretStorePermissionDenied(f"{what}: AppRole login refused ({reason})")
    if isinstance(exc, requests.exceptions.Timeout):
        return SecretStoreUnavailable(f"{what}: timed out")
    if isinstance(exc, requests.exceptions.SSLError):
        return SecretStoreUnavailable(f"{what}: TLS handshake or verification failed")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return SecretStoreUnavailable(f"{what}: cannot connect")
    if isinstance(
        exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError
    ):
        return SecretStoreUnavailable(f"{what}: connection broke mid-response")
    if isinstance(exc, hvac.exceptions.VaultError):
        status = _status_of(exc)
        if status == 403:
            return SecretStorePermissionDenied(f"{what}: HTTP 403 permission denied")
        if status == 404:
            return SecretNotFound(f"{what}: HTTP 404 not found")
        if status == 400 and _is_cas_mismatch(exc):
            return CasMismatch(f"{what}: HTTP 400 check-and-set did not match")
        if status == 429:
            return SecretStoreUnavailable(f"{what}: HTTP 429 rate limited")
        if status is not None and status >= 500:
            return SecretStoreUnavailable(f"{what}: HTTP {status}")
        return SecretStoreError(f"{what}: HTTP {status if status is not None else 'unknown'}")
    return SecretStoreError(f"{what}: unexpected {type(exc).__name__}")


def _status_of(exc: hvac.exceptions.VaultError) -> int | None:
    status = getattr(exc, "credbroker_status", None)
    if isinstance(status, int):
        return status
    for cls, code in _STATUS_BY_CLASS.items():
        if isinstance(exc, cls):
            return code
    return None


def _is_cas_mismatch(exc: hvac.exceptions.VaultError) -> bool:
    errors = exc.errors
    if errors is None and isinstance(exc.text, str):
        # hvac parses `errors` only when Content-Type is exactly "application/json"; a proxy
        # that appends "; charset=utf-8" leaves them in the raw text. Parsed here, never shown.
        try:
            errors = json.loads(exc.text).get("errors")
        except (ValueError, AttributeError):
            errors = None
    if not isinstance(errors, list):
        return False
    return any(isinstance(e, str) and _CAS_MISMATCH in e for e in errors)


def _log(error: SecretStoreError, cause: str) -> None:
    # error.message names the action, the path and the status only (see _translate); `cause`
    # is an exception class name.
    logger.warning("%s [%s, from %s]", error.message, error.code, cause)


# --- responses and inputs --------------------------------------------------------------------


def _parse_read(body: Any, path: str) -> SecretVersion:
    bad = SecretStoreError(f"vault read of {path!r}: unexpected response shape")
    inner = body.get("data") if isinstance(body, dict) else None
    if not isinstance(inner, dict):
        raise bad
    data, metadata = inner.get("data"), inner.get("metadata")
    if not isinstance(data, dict) or not isinstance(metadata, dict):
        raise bad
    version = metadata.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise SecretStoreError(f"vault read of {path!r}: secret holds non-string values")
    return SecretVersion(data=dict(data), version=version)


def _parse_write(body: Any, path: str) -> int:
    inner = body.get("data") if isinstance(body, dict) else None
    version = inner.get("version") if isinstance(inner, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise SecretStoreError(f"vault write of {path!r}: unexpected response shape")
    return version


def _checked_path(path: str) -> str:
    """Refuse paths that requests/urllib3 would normalize into another Vault path."""
    segments = path.split("/")
    if not path or any(s in ("", ".", "..") for s in segments) or not path.isprintable():
        raise InvalidRequest(f"invalid secret path {path!r}", code="invalid_secret_path")
    return path


def _checked_mount(mount: str) -> str:
    segments = mount.split("/")
    if not mount or any(s in ("", ".", "..") for s in segments) or not mount.isprintable():
        raise ConfigError(f"invalid vault mount {mount!r}")
    return mount
