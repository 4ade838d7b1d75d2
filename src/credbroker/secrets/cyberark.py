"""CyberArk Central Credential Provider (CCP) as a secret store: read-only for the broker.

One endpoint, CyberArk's REST GetPassword web service (docs.cyberark.com, "Call the Web Service
using REST"; FACTS.md):

    GET /{service_path}/api/Accounts?AppID=..&Safe=..[&Folder=..]&Object=..|&UserName=..
        [&Address=..][&Reason=..][&ConnectionTimeout=N][&FailRequestOnPasswordChange=true]

    200  {"Content": <password>, "UserName": .., "Address": .., "PasswordChangeInProcess":
         "False", <every other property the account has>}  (values are strings)
    4xx/5xx  {"ErrorCode": "APPAP004E", "ErrorMsg": "..."}

The application is authenticated by CyberArk (allowed machines, and/or the client certificate
this store presents over mTLS); the server certificate is checked against `ca_file` when given.
Each credbroker secret path maps to one account query (config: secret_store.accounts); each
field of the secret is one property of the answer (access key id: UserName or a platform
property such as AWSAccessKeyID; secret: Content).

Errors, by CCP error code first (the documented table), then by HTTP status:

    APPAP004E (404)                      SecretNotFound              configuration: 502
    APPAP306E, APPAP008E (403), 401/403  SecretStorePermissionDenied configuration: 502
    APPAP227E-229E (400, several found)  SecretStoreError            configuration: 502
    AIMWS030E, AIMWS031E, APPAP081E,     SecretStoreError            configuration: 502
    CASVL010E (400, request refused)
    APPAP007E (400: CCP cannot reach     SecretStoreUnavailable      outage: retried, breaker,
    the CyberArk Vault), APPAP282E (500:                             read-only fallback
    the CPM is changing the password),
    other 5xx, 429, refused, timed out,
    TLS failure, broken or non-JSON answer

Messages carry the action, the path, the HTTP status and the ErrorCode: never ErrorMsg (it
repeats the query and may name the password object), never a property value.

Versions. CCP keeps no versions. `read` numbers what it sees per path, in this process: 1 for
the first answer, +1 each time the mapped fields' values change (compared through an HMAC with
a random per-process key, so no plain digest of a secret is kept). A change by CyberArk's CPM
therefore shows as a new version, which is what the parent-key cache and the vend path's
re-read on a refused key need. `read_version(path, n)` answers only the version current now;
any other is SecretNotFound (the store keeps no older versions, as the port allows).
`write` is refused: SecretStoreReadOnly (`writable` is False).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import certifi
from yarl import URL

from credbroker.domain import SecretVersion
from credbroker.errors import (
    ConfigError,
    InvalidRequest,
    SecretNotFound,
    SecretStoreError,
    SecretStorePermissionDenied,
    SecretStoreReadOnly,
    SecretStoreUnavailable,
)

logger = logging.getLogger("credbroker.secrets.cyberark")

# The documented GetPassword error codes and what each means for the broker.
_NOT_FOUND = {"APPAP004E"}
_DENIED = {"APPAP306E", "APPAP008E"}
_AMBIGUOUS = {"APPAP227E", "APPAP228E", "APPAP229E"}
_REFUSED_REQUEST = {"AIMWS030E", "AIMWS031E", "APPAP081E", "CASVL010E"}
_OUTAGE = {"APPAP007E", "APPAP282E"}
# What CCP refuses in a value (it does not decode them), and what splits a Query.
_FORBIDDEN_IN_VALUES = set("+&%;")
_MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class CcpAccount:
    """One secret path: the GetPassword query naming the account, and which answer property
    holds each field of the secret."""

    query: Mapping[str, str]  # Safe, Folder, Object, UserName, Address
    fields: Mapping[str, str]  # credbroker field -> CCP property


class CyberArkCcpStore:
    """SecretStore on CyberArk's Central Credential Provider, read-only (aiohttp, async)."""

    kind = "cyberark-ccp"
    writable = False

    def __init__(
        self,
        url: str,
        *,
        app_id: str,
        accounts: Mapping[str, CcpAccount],
        check_path: str,
        service_path: str = "AIMWebService",
        client_cert: Path | None = None,
        client_key: Path | None = None,
        verify: bool = True,
        ca_file: Path | None = None,
        reason: str | None = "credbroker",
        connection_timeout_seconds: int | None = None,
        fail_request_on_password_change: bool = False,
        timeout_seconds: float = 5.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError("cyberark-ccp url must start with http:// or https://")
        if check_path not in accounts:
            raise ConfigError(f"cyberark-ccp: {check_path!r} is not a mapped account")
        if timeout_seconds <= 0:
            raise ConfigError("cyberark-ccp timeout_seconds must be > 0")
        for account in accounts.values():
            for value in account.query.values():
                _checked_value(value)
        self._endpoint = f"{url.rstrip('/')}/{service_path}/api/Accounts"
        self._accounts = dict(accounts)
        self._check_path = check_path
        self._common: dict[str, str] = {"AppID": _checked_value(app_id)}
        if reason:
            self._common["Reason"] = _checked_value(reason)
        if connection_timeout_seconds is not None:
            self._common["ConnectionTimeout"] = str(connection_timeout_seconds)
        if fail_request_on_password_change:
            self._common["FailRequestOnPasswordChange"] = "true"
        self._ssl = _ssl_context(url, verify, ca_file, client_cert, client_key)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # Per path: (HMAC of the fields' values, version number as this process counts).
        self._mac_key = os.urandom(32)
        self._seen: dict[str, tuple[bytes, int]] = {}

    def __repr__(self) -> str:
        return f"CyberArkCcpStore(endpoint={self._endpoint!r}, accounts={len(self._accounts)})"

    # --- the SecretStore protocol ---------------------------------------------------------

    async def read(self, path: str) -> SecretVersion:
        """The account mapped to `path`, now: GET .../api/Accounts?AppID=..&Safe=..&Object=..

        The version is this process's count of the values it has seen (module docstring)."""
        data = await self._get(path, "read")
        return SecretVersion(data=data, version=self._numbered(path, data))

    async def read_version(self, path: str, version: int) -> SecretVersion:
        """Only the version current now: CCP keeps no older passwords."""
        if version < 1:
            raise InvalidRequest("version must be >= 1")
        current = await self.read(path)
        if current.version != version:
            raise SecretNotFound(
                f"cyberark-ccp read of {path!r} version {version}: CCP keeps no older versions "
                f"(current: {current.version})"
            )
        return current

    async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
        raise SecretStoreReadOnly(
            f"cyberark-ccp write of {path!r}: the store is read-only for the broker; "
            "CyberArk's CPM rotates this secret"
        )

    async def check(self) -> None:
        """Prove the store serves reads: one GetPassword of the object store's key (the
        cheapest authenticated call CCP has; its value is dropped unread)."""
        await self._get(self._check_path, "check")

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # --- one GetPassword call -------------------------------------------------------------

    async def _get(self, path: str, action: str) -> dict[str, str]:
        what = f"cyberark-ccp {action} of {path!r}"
        if self._closed:
            raise SecretStoreError(f"{what}: the store is closed")
        account = self._accounts.get(path)
        if account is None:
            raise SecretNotFound(
                f"{what}: not mapped to a CyberArk account (secret_store.accounts)"
            )
        # Spaces as %20, never `+`: CCP treats a `+` in a value as unsupported.
        query = "&".join(
            f"{name}={quote(value, safe='')}"
            for name, value in {**self._common, **account.query}.items()
        )
        url = f"{self._endpoint}?{query}"
        status: int | None = None
        body: Any = None
        cause = ""
        try:
            session = self._client()
            async with session.get(
                URL(url, encoded=True), headers={"Accept": "application/json"}
            ) as response:
                status = response.status
                # An answer is a few hundred bytes; a proxy's page or worse is cut short and
                # then is not JSON.
                raw = await response.content.read(_MAX_ANSWER_BYTES)
            body = _json(raw)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            cause = "timed out"
        except aiohttp.ClientSSLError:
            cause = "TLS handshake or verification failed"
        except aiohttp.ClientConnectionError:
            cause = "cannot connect"
        except aiohttp.ClientPayloadError:
            cause = "connection broke mid-response"
        except aiohttp.ClientError as exc:  # a malformed answer: named by its type only
            cause = f"broken answer ({type(exc).__name__})"
        if cause:
            error: SecretStoreError = SecretStoreUnavailable(f"{what}: {cause}")
        else:
            assert status is not None
            if status == 200:
                return _fields(body, account, what)
            error = _translate(status, body, what)
        logger.warning("%s [%s]", error.message, error.code)
        raise error

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=16),
                timeout=self._timeout,
                raise_for_status=False,
            )
        return self._session

    def _numbered(self, path: str, data: Mapping[str, str]) -> int:
        canonical = json.dumps(sorted(data.items()), separators=(",", ":")).encode()
        mac = hmac.new(self._mac_key, canonical, hashlib.sha256).digest()
        seen = self._seen.get(path)
        if seen is None:
            version = 1
        elif hmac.compare_digest(seen[0], mac):
            return seen[1]
        else:
            version = seen[1] + 1
            logger.info("cyberark-ccp %r changed (CPM rotation?): now version %d", path, version)
        self._seen[path] = (mac, version)
        return version


# --- translation: the one place that maps answers onto the error tree -------------------------


def _translate(status: int, body: Any, what: str) -> SecretStoreError:
    code = body.get("ErrorCode") if isinstance(body, dict) else None
    code = code if isinstance(code, str) and code.isalnum() and len(code) <= 16 else None
    said = f"HTTP {status}" + (f" {code}" if code else "")
    if code in _NOT_FOUND:
        return SecretNotFound(f"{what}: {said}: no account answers the query")
    if code in _DENIED:
        return SecretStorePermissionDenied(
            f"{what}: {said}: the application failed CyberArk's authentication or may not "
            "use this account (AppID, allowed machines, client certificate, Safe members)"
        )
    if code in _OUTAGE:
        reason = (
            "CCP cannot reach the CyberArk Vault"
            if code == "APPAP007E"
            else "the CPM is changing this password"
        )
        return SecretStoreUnavailable(f"{what}: {said}: {reason}")
    if code in _AMBIGUOUS:
        return SecretStoreError(
            f"{what}: {said}: several accounts answer the query; name one (Object)",
            code="ccp_query_ambiguous",
        )
    if code in _REFUSED_REQUEST:
        return SecretStoreError(f"{what}: {said}: CCP refused the request", code="ccp_bad_request")
    if status in (401, 403):
        return SecretStorePermissionDenied(f"{what}: {said}")
    if status == 404:
        return SecretNotFound(f"{what}: {said}: not found (service_path?)")
    if status == 429 or status >= 500:
        return SecretStoreUnavailable(f"{what}: {said}")
    return SecretStoreError(f"{what}: {said}")


def _fields(body: Any, account: CcpAccount, what: str) -> dict[str, str]:
    if not isinstance(body, dict):
        raise SecretStoreUnavailable(f"{what}: HTTP 200 without a JSON object")
    data = {}
    for field, prop in account.fields.items():
        value = body.get(prop)
        if not isinstance(value, str) or not value:
            raise SecretStoreError(
                f"{what}: the account has no property {prop!r} (for {field}); "
                "check secret_store.accounts fields",
                code="ccp_property_missing",
            )
        data[field] = value
    return data


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _checked_value(value: str) -> str:
    if not value or _FORBIDDEN_IN_VALUES & set(value) or not value.isprintable():
        raise ConfigError(f"cyberark-ccp: query value {value!r} holds a character CCP refuses")
    return value


def _ssl_context(
    url: str,
    verify: bool,
    ca_file: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
) -> ssl.SSLContext | bool:
    """Verify the CCP's certificate (ca_file pins a private CA; else certifi's bundle) and
    present the application's client certificate when configured."""
    if not url.startswith("https://"):
        return False if client_cert is None else _refuse_plain_mtls()
    verify = verify or ca_file is not None
    try:
        context = ssl.create_default_context(cafile=str(ca_file or certifi.where()))
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_cert is not None:
            context.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"cyberark-ccp certificates cannot be loaded: {reason}") from None
    return context


def _refuse_plain_mtls() -> ssl.SSLContext:
    raise ConfigError("cyberark-ccp: a client certificate needs an https:// url")
