"""A Confluence Cloud site for tests, from Atlassian's REST reference (Cloud v2 spaces, v1
content permission check), over real HTTP:

    GET  /wiki/api/v2/spaces?keys=K1,K2&limit=N&cursor=C
         -> {"results": [{"id", "key", "name", "type", "status", "homepageId", ...}],
             "_links": {"next": "/wiki/api/v2/spaces?...&cursor=...", "base": URL}}
            (cursor pagination; `next` absent on the last page; limit 1..250, default 25)
    POST /wiki/rest/api/content/{id}/permission/check
         {"subject": {"type": "user"|"group", "identifier": ...}, "operation": "read"|"update"|...}
         -> 200 {"hasPermission": bool, "errors": [{"message": {"key", "args"}}]}
            400 a malformed body or unknown operation; 404 content the caller cannot see;
            403 when the caller checks another account without being a Confluence admin.

Authentication: Basic email:api_token or Bearer (an OAuth 2.0 access token); anything else
401 with Atlassian's `{"code": 401, "message": ...}`. Rate limiting: `rate_limit(n, after)`
answers the next n requests 429 with Retry-After. `down = True` answers 503 to everything.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

_OPERATIONS = {
    "read",
    "update",
    "delete",
    "create",
    "use",
    "administer",
    "archive",
    "restrict_content",
    "export",
    "purge",
    "purge_version",
}


@dataclass
class Space:
    key: str
    id: str
    homepage_id: str
    viewers: set[str] = field(default_factory=set)
    editors: set[str] = field(default_factory=set)


class ConfluenceDouble:
    def __init__(self, *, email: str, api_token: str, admin: bool = True) -> None:
        self.email = email
        self.api_token = api_token
        self.bearer: str | None = None  # an OAuth access token, if set
        self.admin = admin  # the broker's account is a Confluence Administrator
        self.spaces: dict[str, Space] = {}
        self.requests: list[tuple[str, str]] = []
        self.down = False
        self.delay = 0.0  # seconds before each answer (a slow site)
        self._throttle: list[float] = []
        self._ids = itertools.count(65537)
        self._server: TestServer | None = None
        self.url = ""

    # --- the site's content ----------------------------------------------------------------

    def add_space(self, key: str) -> Space:
        space = Space(key, str(next(self._ids)), str(next(self._ids)))
        self.spaces[key] = space
        return space

    def grant(self, key: str, account_id: str, *, edit: bool = False) -> None:
        space = self.spaces[key]
        space.viewers.add(account_id)
        if edit:
            space.editors.add(account_id)

    def rate_limit(self, requests: int, retry_after: float) -> None:
        self._throttle = [retry_after] * requests

    # --- HTTP -------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/wiki/api/v2/spaces", self._list_spaces)
        app.router.add_post("/wiki/rest/api/content/{id}/permission/check", self._check)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        self.url = str(self._server.make_url("")).rstrip("/")
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            return web.Response(status=503, text="Service Unavailable")
        if self._throttle:
            wait = self._throttle.pop(0)
            return web.json_response(
                {"code": 429, "message": "Rate limit exceeded"},
                status=429,
                headers={"Retry-After": f"{wait:g}"},
            )
        if not self._authorized(request.headers.get("Authorization", "")):
            return web.json_response(
                {"code": 401, "message": "Client must be authenticated to access this resource."},
                status=401,
            )
        return await handler(request)

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme == "Basic":
            expected = base64.b64encode(f"{self.email}:{self.api_token}".encode()).decode()
            return value == expected
        return scheme == "Bearer" and self.bearer is not None and value == self.bearer

    async def _list_spaces(self, request: web.Request) -> web.Response:
        keys = [k for k in request.query.get("keys", "").split(",") if k]
        try:
            limit = int(request.query.get("limit", "25"))
            start = int(request.query.get("cursor", "0"))
        except ValueError:
            return _error(400, "Invalid cursor or limit")
        if not 1 <= limit <= 250:
            return _error(400, "limit must be between 1 and 250")
        chosen = [s for k, s in sorted(self.spaces.items()) if not keys or k in keys]
        page = chosen[start : start + limit]
        links: dict[str, str] = {"base": self.url + "/wiki"}
        if start + limit < len(chosen):
            query = f"limit={limit}&cursor={start + limit}"
            if keys:
                query = f"keys={','.join(keys)}&{query}"
            links["next"] = f"/wiki/api/v2/spaces?{query}"
        return web.json_response(
            {
                "results": [
                    {
                        "id": s.id,
                        "key": s.key,
                        "name": f"{s.key} space",
                        "type": "global",
                        "status": "current",
                        "homepageId": s.homepage_id,
                        "_links": {"webui": f"/spaces/{s.key}"},
                    }
                    for s in page
                ],
                "_links": links,
            }
        )

    async def _check(self, request: web.Request) -> web.Response:
        space = next(
            (s for s in self.spaces.values() if s.homepage_id == request.match_info["id"]), None
        )
        if space is None:
            return _error(404, "No content found with id")
        try:
            body = await request.json()
            subject, operation = body["subject"], body["operation"]
            kind, identifier = subject["type"], subject["identifier"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "subject and operation are required")
        if kind not in ("user", "group") or operation not in _OPERATIONS:
            return _error(400, f"invalid subject type or operation {operation}")
        if not self.admin:
            return _error(403, "Only Confluence administrators can check other users")
        if kind == "group":
            return web.json_response({"hasPermission": False, "errors": []})
        allowed = identifier in (space.editors if operation == "update" else space.viewers)
        if operation not in ("read", "update"):
            allowed = False
        errors = (
            []
            if allowed
            else [
                {
                    "translation": "User does not have permission to the space",
                    "args": [],
                    "message": {"key": "permission.check.user.space", "args": []},
                }
            ]
        )
        return web.json_response({"hasPermission": allowed, "errors": errors})


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"statusCode": status, "data": {"authorized": False, "valid": False}, "message": message},
        status=status,
    )


class ConfluenceDataCenterDouble(ConfluenceDouble):
    """A Confluence Data Center (7.9+) site for tests, from Atlassian's Server REST reference
    and remote API (see src/credbroker/confluence/datacenter.py for the sources), over HTTP:

        GET  /rest/api/space/{key}                -> 200 {"id", "key", "name", "type", ...}
                                                     404 {"statusCode": 404, ..., "message"}
        GET  /rest/api/user?username=U | ?key=K   -> 200 {"type": "known", "username",
                                                     "userKey", "displayName"}; 404; 400
                                                     without either parameter
        POST /rpc/json-rpc/confluenceservice-v2   JSON-RPC 2.0, method getPermissionsForUser
             [spaceKey, username] -> {"result": ["view", "comment", "modify", ...]}; a
             non-administrator caller, an unknown method or user -> {"error": {...}} (HTTP 200, or
             500 with `rpc_error_status`: which one a real server sends is not verified)

    Authentication: `Authorization: Bearer <personal access token>` only (`pat`); anything
    else 401. Users are created by `grant` (username -> a 32-hex-digit user key). Rate limiting,
    `down` and `delay` as for the Cloud double."""

    def __init__(self, *, pat: str, admin: bool = True) -> None:
        super().__init__(email="", api_token="", admin=admin)
        self.pat = pat
        self.users: dict[str, str] = {}  # username -> userKey
        self.rpc_error_status = 200  # the HTTP status of a JSON-RPC error (200 or 500)

    def grant(self, key: str, account_id: str, *, edit: bool = False) -> None:
        self.users.setdefault(account_id, f"{len(self.users) + 1:032x}")
        super().grant(key, account_id, edit=edit)

    async def start(self) -> str:
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/rest/api/space/{key}", self._space)
        app.router.add_get("/rest/api/user", self._user)
        app.router.add_post("/rpc/json-rpc/confluenceservice-v2", self._rpc)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        self.url = str(self._server.make_url("")).rstrip("/")
        return self.url

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        return scheme == "Bearer" and bool(self.pat) and value == self.pat

    async def _space(self, request: web.Request) -> web.Response:
        space = self.spaces.get(request.match_info["key"])
        if space is None:
            return _error(404, f"No space with key : {request.match_info['key']}")
        return web.json_response(
            {
                "id": int(space.id),
                "key": space.key,
                "name": f"{space.key} space",
                "type": "global",
                "_links": {"webui": f"/display/{space.key}"},
            }
        )

    async def _user(self, request: web.Request) -> web.Response:
        if "username" in request.query:
            name: str | None = request.query["username"]
            if name not in self.users:
                name = None
        elif "key" in request.query:
            key = request.query["key"]
            name = next((n for n, k in self.users.items() if k == key), None)
        else:
            return _error(400, "username or key is required")
        if name is None:
            return _error(404, "No user found")
        return web.json_response(
            {
                "type": "known",
                "username": name,
                "userKey": self.users[name],
                "displayName": name.title(),
                "_links": {"self": f"{self.url}/rest/api/user?key={self.users[name]}"},
            }
        )

    async def _rpc(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            method, params, ident = body["method"], body["params"], body.get("id")
        except (ValueError, KeyError, TypeError):
            return web.json_response(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
            )

        def failure(message: str) -> web.Response:
            return web.json_response(
                {"jsonrpc": "2.0", "id": ident, "error": {"code": 500, "message": message}},
                status=self.rpc_error_status,
            )

        if method != "getPermissionsForUser":
            return failure(f"No such method: {method}")
        if not isinstance(params, list) or len(params) != 2:
            return failure("getPermissionsForUser takes spaceKey and userName")
        if not self.admin:
            return failure(
                "com.atlassian.confluence.rpc.NotPermittedException: "
                "You do not have permission to view permissions for this space"
            )
        space_key, username = params
        space = self.spaces.get(space_key)
        if space is None or username not in self.users:
            return failure("com.atlassian.confluence.rpc.RemoteException: no such space or user")
        result: list[str] = []
        if username in space.viewers:
            result.append("view")
        if username in space.editors:
            result += ["comment", "modify"]
        return web.json_response({"jsonrpc": "2.0", "id": ident, "result": result})
