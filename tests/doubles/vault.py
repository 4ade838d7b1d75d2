"""VaultDouble: a small HTTP server on 127.0.0.1 that speaks Vault's public HTTP API.

Written from the API docs (developer.hashicorp.com/vault/api-docs: secret/kv/kv-v2,
auth/approle, auth/token, system/health) and, for check-and-set, from the KV v2 plugin itself
(hashicorp/vault-plugin-secrets-kv, path_data.go: a cas mismatch is HTTP 400 with
"check-and-set parameter did not match the current version"; cas=0 on an existing key is the
same mismatch). Implemented:

    GET|HEAD  /v1/sys/health                      200 active, 503 sealed (body says sealed)
    POST      /v1/auth/approle/login              role_id + secret_id -> auth.client_token
    GET       /v1/auth/token/lookup-self
    GET       /v1/{mount}/data/{path}[?version=N]  404 {"errors": []} when missing
    POST|PUT  /v1/{mount}/data/{path}             {"data": {...}, "options": {"cas": N}}
    DELETE    /v1/{mount}/data/{path}             soft-delete the latest version
    GET       /v1/{mount}/metadata/{path}         metadata; with ?list=true the key listing
    DELETE    /v1/{mount}/metadata/{path}         forget the key and all its versions

The LIST verb is handled too, but aiohttp's default (llhttp) parser rejects unknown methods
with a 400 before any handler runs; Vault documents GET ?list=true as the equivalent (hvac
uses it with strict_http=True), so use that, or run with AIOHTTP_NO_EXTENSIONS=1.

Every answer uses Vault's envelope (request_id, lease_id, renewable, lease_duration, data,
wrap_info, warnings, auth); errors are {"errors": [...]}. Tokens come from X-Vault-Token:
missing, unknown or revoked -> 403 {"errors": ["permission denied"]}. Storage is keyed by
X-Vault-Namespace. Tokens are global (real Vault scopes them to a namespace).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web

from tests.doubles.loopback import LoopbackServer


@dataclass(frozen=True)
class Policies:
    """What a token may do: secret-path prefixes (relative to the mount, "" = all)."""

    read: frozenset[str] = frozenset({""})
    write: frozenset[str] = frozenset({""})
    name: str = "credbroker"

    @classmethod
    def prefixes(cls, *prefixes: str, write: bool = True) -> Policies:
        return cls(frozenset(prefixes), frozenset(prefixes if write else ()))

    def allows(self, capability: str, path: str) -> bool:
        prefixes = self.read if capability == "read" else self.write
        return any(path.startswith(prefix) for prefix in prefixes)


ALL = Policies()


@dataclass
class _Token:
    policies: Policies
    path: str
    ttl: int
    accessor: str = field(default_factory=lambda: str(uuid.uuid4()))
    issued: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class _Version:
    data: dict[str, Any]
    created_time: str = field(default_factory=lambda: _now())
    deletion_time: str = ""
    destroyed: bool = False

    def metadata(self, number: int) -> dict[str, Any]:
        return {
            "created_time": self.created_time,
            "custom_metadata": None,
            "deletion_time": self.deletion_time,
            "destroyed": self.destroyed,
            "version": number,
        }


class VaultDouble(LoopbackServer):
    route = "/v1/{tail:.*}"

    def __init__(self, *, mount: str = "secret") -> None:
        super().__init__()
        self.mount = mount
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request seen
        self.issued_tokens: list[str] = []  # client tokens handed out by AppRole logins
        self._tokens: dict[str, _Token] = {}
        self._approles: dict[str, tuple[str, Policies, int]] = {}
        self._secrets: dict[tuple[str, str], list[_Version]] = {}
        self._sealed = False
        self._hang = 0.0
        self._failures: list[tuple[int, list[str]]] = []

    @property
    def url(self) -> str:
        return self.base_url

    @property
    def request_count(self) -> int:
        return len(self.requests)

    # --- controls for tests ---------------------------------------------------------------

    def seal(self) -> None:
        self._sealed = True

    def unseal(self) -> None:
        self._sealed = False

    def hang(self, seconds: float) -> None:
        """Delay every answer by `seconds` from now on (0 stops it)."""
        self._hang = seconds

    def fail_next(self, n: int, status: int, errors: Iterable[str] | None = None) -> None:
        """Answer the next `n` requests, whatever they are, with `status` and {"errors"}."""
        message = [HTTPStatus(status).phrase.lower()] if errors is None else list(errors)
        self._failures.extend([(status, message)] * n)

    def add_token(self, token: str, policies: Policies = ALL) -> None:
        self._tokens[token] = _Token(policies, path="auth/token/create", ttl=0)

    def revoke(self, token: str) -> None:
        self._tokens.pop(token, None)

    def add_approle(
        self, role_id: str, secret_id: str, token_policies: Policies = ALL, token_ttl: int = 3600
    ) -> None:
        self._approles[role_id] = (secret_id, token_policies, token_ttl)

    def put(self, path: str, data: Mapping[str, Any], *, namespace: str = "") -> int:
        """Seed a new version directly; returns its number."""
        versions = self._secrets.setdefault((namespace.strip("/"), path), [])
        versions.append(_Version(dict(data)))
        return len(versions)

    def current_version(self, path: str, *, namespace: str = "") -> int:
        return len(self._secrets.get((namespace.strip("/"), path), []))

    # --- request handling -----------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = request.match_info["tail"]
        self.requests.append((request.method, "/v1/" + route))
        if self._hang:
            await asyncio.sleep(self._hang)
        if self._failures:
            status, errors = self._failures.pop(0)
            return _errors(status, *errors)
        if route == "sys/health":
            return self._health()
        if self._sealed:
            return _errors(503, "Vault is sealed")
        if route == "auth/approle/login" and request.method in ("POST", "PUT"):
            return await self._approle_login(request)
        token = self._tokens.get(request.headers.get("X-Vault-Token", ""))
        if token is None:
            return _errors(403, "permission denied")
        if route == "auth/token/lookup-self" and request.method == "GET":
            return self._lookup_self(request.headers["X-Vault-Token"], token)
        namespace = request.headers.get("X-Vault-Namespace", "").strip("/")
        for kind in ("data", "metadata"):
            prefix = f"{self.mount}/{kind}/"
            if route.startswith(prefix):
                path = route.removeprefix(prefix)
                return await self._kv(request, kind, (namespace, path), token.policies)
        return _errors(404, f"no handler for route {route!r}. route entry not found.")

    def _health(self) -> web.Response:
        replication = "unknown" if self._sealed else "disabled"
        body: dict[str, Any] = {
            "initialized": True,
            "sealed": self._sealed,
            "standby": self._sealed,
            "performance_standby": False,
            "replication_performance_mode": replication,
            "replication_dr_mode": replication,
            "server_time_utc": int(datetime.now(UTC).timestamp()),
            "version": "1.17.0+double",
        }
        if not self._sealed:
            body |= {"cluster_name": "vault-double", "cluster_id": str(uuid.UUID(int=0))}
        return _json(body, status=503 if self._sealed else 200)

    async def _approle_login(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        role_id, secret_id = body.get("role_id"), body.get("secret_id")
        if not role_id:
            return _errors(400, "missing role_id")
        role = self._approles.get(str(role_id))
        if role is None or role[0] != secret_id:
            return _errors(400, "invalid role or secret ID")
        _, policies, ttl = role
        client_token = f"hvs.double-{uuid.uuid4().hex}"
        token = _Token(policies, path="auth/approle/login", ttl=ttl)
        self._tokens[client_token] = token
        self.issued_tokens.append(client_token)
        auth = {
            "client_token": client_token,
            "accessor": token.accessor,
            "policies": ["default", policies.name],
            "token_policies": ["default", policies.name],
            "metadata": {"role_name": "credbroker"},
            "lease_duration": ttl,
            "renewable": True,
            "entity_id": "",
            "token_type": "service",
            "orphan": True,
        }
        return _ok(auth=auth)

    def _lookup_self(self, client_token: str, token: _Token) -> web.Response:
        data = {
            "accessor": token.accessor,
            "creation_time": int(token.issued.timestamp()),
            "creation_ttl": token.ttl,
            "display_name": "approle" if "approle" in token.path else "token",
            "entity_id": "",
            "expire_time": None,
            "explicit_max_ttl": 0,
            "id": client_token,
            "issue_time": token.issued.isoformat(),
            "meta": None,
            "num_uses": 0,
            "orphan": True,
            "path": token.path,
            "policies": ["default", token.policies.name],
            "renewable": token.ttl > 0,
            "ttl": token.ttl,
            "type": "service",
        }
        return _ok(data)

    async def _kv(
        self, request: web.Request, kind: str, key: tuple[str, str], policies: Policies
    ) -> web.Response:
        method, path = request.method, key[1]
        listing = method == "LIST" or request.query.get("list") == "true"
        write = method in ("POST", "PUT", "DELETE")
        if not policies.allows("write" if write else "read", path):
            return _errors(403, "permission denied")
        versions = self._secrets.get(key)
        if kind == "metadata" and listing:
            return self._list(key)
        if kind == "metadata" and method == "GET":
            return _ok(_metadata(versions)) if versions else _errors(404)
        if kind == "metadata" and method == "DELETE":
            self._secrets.pop(key, None)
            return web.Response(status=204)
        if kind == "data" and method == "GET":
            return self._read(versions, request.query.get("version", "0"))
        if kind == "data" and method in ("POST", "PUT"):
            return await self._write(request, key)
        if kind == "data" and method == "DELETE":
            if versions:
                versions[-1].deletion_time = _now()
            return web.Response(status=204)
        return _errors(405, "1 error occurred:\n\t* unsupported operation\n\n")

    def _read(self, versions: list[_Version] | None, wanted: str) -> web.Response:
        if not versions:
            return _errors(404)
        number = int(wanted) if wanted.isdigit() and int(wanted) > 0 else len(versions)
        if number > len(versions):
            return _errors(404)
        version = versions[number - 1]
        if version.deletion_time or version.destroyed:  # 404 that still carries the metadata
            return _ok({"data": None, "metadata": version.metadata(number)}, status=404)
        return _ok({"data": version.data, "metadata": version.metadata(number)})

    async def _write(self, request: web.Request, key: tuple[str, str]) -> web.Response:
        body = await _json_body(request)
        data, options = body.get("data"), body.get("options") or {}
        if not isinstance(data, dict):
            return _errors(400, "no data provided")
        versions = self._secrets.get(key, [])
        if isinstance(options, dict) and "cas" in options:
            cas = options["cas"]
            if not isinstance(cas, int) and not (isinstance(cas, str) and cas.isdigit()):
                return _errors(400, "error parsing check-and-set parameter")
            if int(cas) != len(versions):
                return _errors(400, "check-and-set parameter did not match the current version")
        version = _Version(data)
        self._secrets.setdefault(key, versions).append(version)
        return _ok(version.metadata(len(versions)))

    def _list(self, key: tuple[str, str]) -> web.Response:
        namespace, folder = key
        folder = folder if not folder or folder.endswith("/") else folder + "/"
        keys: set[str] = set()
        for ns, path in self._secrets:
            if ns == namespace and path.startswith(folder):
                head, slash, _ = path.removeprefix(folder).partition("/")
                keys.add(head + slash)
        return _ok({"keys": sorted(keys)}) if keys else _errors(404)


def _metadata(versions: list[_Version]) -> dict[str, Any]:
    return {
        "cas_required": False,
        "created_time": versions[0].created_time,
        "current_version": len(versions),
        "custom_metadata": None,
        "delete_version_after": "0s",
        "max_versions": 0,
        "oldest_version": 0,
        "updated_time": versions[-1].created_time,
        "versions": {
            str(n): {k: v for k, v in version.metadata(n).items() if k != "version"}
            for n, version in enumerate(versions, start=1)
        },
    }


def _ok(data: Any = None, *, auth: Any = None, status: int = 200) -> web.Response:
    envelope = {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": auth,
    }
    return _json(envelope, status=status)


def _errors(status: int, *errors: str) -> web.Response:
    return _json({"errors": list(errors)}, status=status)


def _json(body: Any, *, status: int) -> web.Response:
    # Exactly "application/json", as Vault sends it: hvac only parses `errors` out of an error
    # response whose Content-Type equals that string (aiohttp would append "; charset=utf-8").
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    return web.Response(body=json.dumps(body).encode(), status=status, headers=headers)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
