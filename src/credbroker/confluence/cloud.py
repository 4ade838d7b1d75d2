"""ports.ActorDirectory on Confluence Cloud's REST API.

Two calls per (space, actor, access), the answer cached for `cache_seconds`:

    GET  /wiki/api/v2/spaces?keys={KEY}                     the space's id and homepageId
         (cursor pagination: `_links.next`; scope read:space:confluence)
    POST /wiki/rest/api/content/{homepageId}/permission/check
         {"subject": {"type": "user", "identifier": accountId}, "operation": "read"|"update"}
         -> {"hasPermission": bool, "errors": [...]}

The permission check covers site, space and content permissions (Atlassian's reference,
"Check content permissions"); viewing (editing) the space's home page is what we take for
viewing (editing) the space. Checking another account needs the broker's account to be a
Confluence Administrator (ask Atlassian's docs before you give it less).

Auth: Basic with an Atlassian account's email and API token, or an OAuth 2.0 bearer token,
read from the secret store at call time. 429 answers carry Retry-After: waited out once when
short enough, else the call is "unavailable". The whole check has one deadline.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import Any, Literal

import aiohttp

from credbroker.domain import Access, SecretVersion
from credbroker.errors import ActorCheckFailed, ActorCheckUnavailable, SecretStoreUnavailable

log = logging.getLogger("credbroker.confluence")

# Cloud account ids: "557058:0f9e..." or 24 hex digits; anything else is never sent.
_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9:_-]{1,128}$")
_MAX_PAGES = 10


class ConfluenceCloudDirectory:
    def __init__(
        self,
        *,
        url: str,
        credentials: Callable[[], Awaitable[SecretVersion]],
        auth: Literal["basic", "bearer"] = "basic",
        ssl: SSLContext | bool = True,
        timeout_seconds: float = 3.0,
        cache_seconds: float = 60.0,
        max_retry_after_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._base = url.rstrip("/")
        self._credentials = credentials
        self._auth = auth
        self._ssl = ssl
        self._timeout = timeout_seconds
        self._cache_seconds = cache_seconds
        self._max_wait = max_retry_after_seconds
        self._clock = clock
        self._sleep = sleep
        self._answers: dict[tuple[str, str, Access], tuple[bool, float]] = {}
        self._homepages: dict[str, tuple[str, float]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.calls = 0  # HTTP requests made (tests read it: the cache works)

    async def permitted(self, *, space: str, actor: str, access: Access) -> bool:
        if not _ACCOUNT_ID.match(actor):
            return False  # not an account id: nobody Confluence knows
        key = (space, actor, access)
        now = self._clock()
        cached = self._answers.get(key)
        if cached is not None and now - cached[1] < self._cache_seconds:
            return cached[0]
        try:
            async with asyncio.timeout(self._timeout):
                homepage = await self._homepage(space)
                answer = await self._check(homepage, actor, access)
        except TimeoutError:
            raise ActorCheckUnavailable(
                f"Confluence did not answer within {self._timeout:g}s"
            ) from None
        self._answers[key] = (answer, self._clock())
        return answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- calls ------------------------------------------------------------------------------

    async def _homepage(self, space: str) -> str:
        cached = self._homepages.get(space)
        if cached is not None and self._clock() - cached[1] < self._cache_seconds:
            return cached[0]
        path: str | None = f"/wiki/api/v2/spaces?keys={space}"
        for _ in range(_MAX_PAGES):
            if path is None:
                break
            status, body = await self._call("GET", path)
            if status != 200:
                raise self._refused(status, "space lookup")
            for item in body.get("results") or []:
                if isinstance(item, dict) and item.get("key") == space:
                    homepage = item.get("homepageId")
                    if not homepage:
                        raise ActorCheckFailed(f"Confluence space {space} has no home page")
                    self._homepages[space] = (str(homepage), self._clock())
                    return str(homepage)
            links = body.get("_links") or {}
            path = links.get("next") if isinstance(links, dict) else None
        raise ActorCheckFailed(
            f"Confluence knows no space {space} (or the broker's account cannot see it)"
        )

    async def _check(self, homepage: str, actor: str, access: Access) -> bool:
        operation = "update" if access is Access.WRITE else "read"
        status, body = await self._call(
            "POST",
            f"/wiki/rest/api/content/{homepage}/permission/check",
            json={"subject": {"type": "user", "identifier": actor}, "operation": operation},
        )
        if status == 200:
            return body.get("hasPermission") is True
        if status in (400, 404):
            return False  # an account or page Confluence does not know: no permission
        raise self._refused(status, "permission check")

    def _refused(self, status: int, what: str) -> Exception:
        if status in (401, 403):
            return ActorCheckFailed(
                f"Confluence refused the broker's {what} ({status}): check "
                "confluence.credentials_path and the account's permissions"
            )
        return ActorCheckUnavailable(f"Confluence answered {status} to the {what}")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        error_envelopes: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        """`error_envelopes`: a 5xx whose body is a JSON object with "error" (a JSON-RPC
        error, which some servers send with 500) is returned, not taken for an outage."""
        headers = {"Authorization": await self._authorization(), "Accept": "application/json"}
        session = self._open()
        waited = False
        while True:
            self.calls += 1
            try:
                async with session.request(
                    method, self._base + path, json=json, headers=headers, allow_redirects=False
                ) as answer:
                    if answer.status == 429:
                        wait = _retry_after(answer.headers.get("Retry-After"))
                        if waited or wait is None or wait > self._max_wait:
                            refused = ActorCheckUnavailable("Confluence is rate limiting us (429)")
                            refused.retry_after = wait
                            raise refused
                    elif answer.status >= 500:
                        envelope = await _error_envelope(answer) if error_envelopes else None
                        if envelope is None:
                            raise ActorCheckUnavailable(f"Confluence answered {answer.status}")
                        return answer.status, envelope
                    else:
                        try:
                            body = await answer.json(content_type=None)
                        except ValueError:
                            body = {}
                        return answer.status, body if isinstance(body, dict) else {}
            except aiohttp.ClientError:
                raise ActorCheckUnavailable("Confluence is unreachable") from None
            waited = True
            log.info("Confluence answered 429; retrying after %.1fs", wait)
            await self._sleep(wait)

    async def _authorization(self) -> str:
        try:
            secret = await self._credentials()
        except SecretStoreUnavailable:
            # The space's choice (fail closed, or reads unverified) applies, as for Confluence.
            raise ActorCheckUnavailable(
                "Confluence's credentials cannot be read: the secret store is unreachable"
            ) from None
        if self._auth == "bearer":
            return "Bearer " + secret.get("token")
        pair = f"{secret.get('email')}:{secret.get('api_token')}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(ssl=self._ssl),
            )
        return self._session


async def _error_envelope(answer: aiohttp.ClientResponse) -> dict[str, Any] | None:
    try:
        body = await answer.json(content_type=None)
    except ValueError:
        return None
    return body if isinstance(body, dict) and "error" in body else None


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (Atlassian sends seconds); None if absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
