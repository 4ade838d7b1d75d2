"""ports.ActorDirectory on Confluence Data Center (Server) 7.9 and later.

Data Center's REST API has no "may this other user do X" call: Cloud's
`POST /wiki/rest/api/content/{id}/permission/check` is in Atlassian's Cloud reference only, not
the Server/Data Center one, and
`GET /rest/api/space/{key}/permissions` (9.1+, CONFSERVER-100505) lists assignments, not a
user's effective permission. What every Data Center release from 7.9 on answers for a named
user, groups included, is the remote API's

    getPermissionsForUser(spaceKey, userName) -> ["view", "modify", "comment", "admin"]

(Atlassian, "Confluence XML-RPC and SOAP APIs": "Returns a Vector of Strings representing the
permissions the given user has for this space", since 2.1.4; CONFSERVER-21951: only these four
come back, EDITSPACE as "modify"). Its JSON-RPC binding ("Confluence JSON-RPC APIs", bundled
since 4.1, deprecated since 5.5 but not removed: "Deprecated code paths removed in 9.0" drops
only XML-RPC exportSpace/exportSite) is `POST /rpc/json-rpc/confluenceservice-v2`, the token
argument left out. "view" is View (the space), "modify" is Add/edit pages. So three calls per
(space, actor, access), each answer cached for `cache_seconds`:

    GET  /rest/api/space/{KEY}                    404: no such space (a configuration error)
    GET  /rest/api/user?username=U | ?key=K       404: nobody Confluence knows -> no
         -> {"type": "known", "username", "userKey", "displayName", ...}
    POST /rpc/json-rpc/confluenceservice-v2
         {"jsonrpc": "2.0", "method": "getPermissionsForUser", "params": [KEY, username], "id"}
         -> {"jsonrpc": "2.0", "id", "result": [...]} | {"error": {"code", "message"}}

Unlike Cloud's check this is the space permission only: a page restriction on the space's
home page does not change the answer. The site must have the remote API enabled (General
Configuration > Further Configuration > Remote API), and asking about another user needs the
broker's account to administer Confluence (or the space).

Auth: `Authorization: Bearer <personal access token>` (Data Center 7.9+, "Using Personal
Access Tokens"), the token read from the secret store (field `token`) at call time. Data
Center's rate limiting (7.20+/8.x) answers 429 with Retry-After (seconds), handled as for Cloud.

NOT verified against a real Data Center server: in particular whether JSON-RPC accepts a
personal access token (its 2017 page names basic auth, OAuth and a session). The contract
suite runs against a real server when CONFLUENCE_DC_URL etc. are set.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import Literal
from urllib.parse import quote

from credbroker.confluence.cloud import ConfluenceCloudDirectory
from credbroker.domain import Access, SecretVersion
from credbroker.errors import ActorCheckFailed, ActorCheckUnavailable

# Data Center usernames (and 32-hex-digit user keys): anything else is never sent.
_USER = re.compile(r"^[A-Za-z0-9._@:+-]{1,255}$")
_SPACE = re.compile(r"^~?[A-Za-z0-9]{1,255}$")
_RPC = "/rpc/json-rpc/confluenceservice-v2"


class ConfluenceDataCenterDirectory(ConfluenceCloudDirectory):
    def __init__(
        self,
        *,
        url: str,
        credentials: Callable[[], Awaitable[SecretVersion]],
        actor_id: Literal["username", "key"] = "username",
        ssl: SSLContext | bool = True,
        timeout_seconds: float = 3.0,
        cache_seconds: float = 60.0,
        max_retry_after_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(
            url=url,
            credentials=credentials,
            auth="bearer",
            ssl=ssl,
            timeout_seconds=timeout_seconds,
            cache_seconds=cache_seconds,
            max_retry_after_seconds=max_retry_after_seconds,
            clock=clock,
            sleep=sleep,
        )
        self._actor_id = actor_id
        self._spaces: dict[str, float] = {}
        self._users: dict[str, tuple[str | None, float]] = {}
        self._ids = itertools.count(1)

    async def permitted(self, *, space: str, actor: str, access: Access) -> bool:
        if not _USER.match(actor) or not _SPACE.match(space):
            return False  # not a username / user key: nobody Confluence knows
        key = (space, actor, access)
        cached = self._answers.get(key)
        if cached is not None and self._clock() - cached[1] < self._cache_seconds:
            return cached[0]
        try:
            async with asyncio.timeout(self._timeout):
                await self._space(space)
                username = await self._username(actor)
                answer = username is not None and await self._allowed(space, username, access)
        except TimeoutError:
            raise ActorCheckUnavailable(
                f"Confluence did not answer within {self._timeout:g}s"
            ) from None
        self._answers[key] = (answer, self._clock())
        return answer

    def _fresh(self, at: float | None) -> bool:
        return at is not None and self._clock() - at < self._cache_seconds

    async def _space(self, space: str) -> None:
        if self._fresh(self._spaces.get(space)):
            return
        status, _ = await self._call("GET", f"/rest/api/space/{quote(space, safe='~')}")
        if status == 404:
            raise ActorCheckFailed(
                f"Confluence knows no space {space} (or the broker's account cannot see it)"
            )
        if status != 200:
            raise self._refused(status, "space lookup")
        self._spaces[space] = self._clock()

    async def _username(self, actor: str) -> str | None:
        cached = self._users.get(actor)
        if cached is not None and self._fresh(cached[1]):
            return cached[0]
        status, body = await self._call(
            "GET", f"/rest/api/user?{self._actor_id}={quote(actor, safe='')}"
        )
        if status in (400, 404):
            username = None  # nobody Confluence knows: no permission
        elif status == 200:
            found = body.get("username")
            username = found if isinstance(found, str) and _USER.match(found) else None
        else:
            raise self._refused(status, "user lookup")
        self._users[actor] = (username, self._clock())
        return username

    async def _allowed(self, space: str, username: str, access: Access) -> bool:
        status, body = await self._call(
            "POST",
            _RPC,
            json={
                "jsonrpc": "2.0",
                "method": "getPermissionsForUser",
                "params": [space, username],
                "id": next(self._ids),
            },
            error_envelopes=True,
        )
        if status == 404:
            raise ActorCheckFailed(
                "Confluence has no JSON-RPC remote API (disabled, or removed in this release)"
            )
        if status not in (200, 500):
            raise self._refused(status, "permission lookup")
        if "error" in body:
            # NotPermittedException (the broker's account may not read others' permissions),
            # the remote API switched off, or a user Confluence cannot resolve after all.
            raise ActorCheckFailed(
                "Confluence refused the broker's permission lookup (JSON-RPC error): enable "
                "the remote API; the broker's account must administer Confluence or the space"
            )
        result = body.get("result")
        if not isinstance(result, list):
            raise ActorCheckUnavailable("Confluence answered the permission lookup without a list")
        needed = "modify" if access is Access.WRITE else "view"
        return needed in result
