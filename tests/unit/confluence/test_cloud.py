"""The Confluence Cloud adapter's behaviour around the answers (the contract suite covers the
answers themselves): the cache, 429 with Retry-After, an outage, a slow site, OAuth bearer,
an account that may not check others, and the double's own pagination."""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from credbroker.confluence.cloud import ConfluenceCloudDirectory
from credbroker.domain import Access, SecretVersion
from credbroker.errors import ActorCheckFailed, ActorCheckUnavailable, SecretStoreUnavailable
from tests.doubles.confluence import ConfluenceDouble
from tests.fakes import MonotonicClock

VIEWER = "557058:viewer"


@pytest.fixture
async def site() -> AsyncIterator[ConfluenceDouble]:
    double = ConfluenceDouble(email="broker@example.org", api_token="double-api-token")
    await double.start()
    double.add_space("ENG")
    double.grant("ENG", VIEWER)
    yield double
    await double.close()


class Slept:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def directory(
    site: ConfluenceDouble, *, bearer: bool = False, **options: object
) -> ConfluenceCloudDirectory:
    data = (
        {"token": "oauth-access"} if bearer else {"email": site.email, "api_token": site.api_token}
    )

    async def credentials() -> SecretVersion:
        return SecretVersion(data, version=1)

    return ConfluenceCloudDirectory(
        url=site.url,
        credentials=credentials,
        auth="bearer" if bearer else "basic",
        **options,  # type: ignore[arg-type]
    )


async def test_answers_are_cached_briefly(site: ConfluenceDouble) -> None:
    clock = MonotonicClock()
    checker = directory(site, clock=clock, cache_seconds=60)
    try:
        assert await checker.permitted(space="ENG", actor=VIEWER, access=Access.READ)
        assert checker.calls == 2  # the space's home page, then the check
        site.spaces["ENG"].viewers.clear()
        assert await checker.permitted(space="ENG", actor=VIEWER, access=Access.READ)
        assert checker.calls == 2
        clock.advance(61)
        assert not await checker.permitted(space="ENG", actor=VIEWER, access=Access.READ)
    finally:
        await checker.close()


async def test_a_short_429_is_waited_out_once(site: ConfluenceDouble) -> None:
    slept = Slept()
    checker = directory(site, sleep=slept, max_retry_after_seconds=2)
    site.rate_limit(1, retry_after=1)
    try:
        assert await checker.permitted(space="ENG", actor=VIEWER, access=Access.READ)
    finally:
        await checker.close()
    assert slept.waits == [1.0]


async def test_a_long_or_repeated_429_is_unavailable_with_retry_after(
    site: ConfluenceDouble,
) -> None:
    slept = Slept()
    checker = directory(site, sleep=slept, max_retry_after_seconds=2)
    try:
        site.rate_limit(1, retry_after=30)
        with pytest.raises(ActorCheckUnavailable, match="429") as info:
            await checker.permitted(space="ENG", actor=VIEWER, access=Access.READ)
        assert info.value.retry_after == 30 and slept.waits == []
        site.rate_limit(2, retry_after=1)
        with pytest.raises(ActorCheckUnavailable, match="429"):
            await checker.permitted(space="ENG", actor=VIEWER, access=Access.READ)
        assert slept.waits == [1.0]
    finally:
        await checker.close()


async def test_a_site_that_is_down_is_unavailable(site: ConfluenceDouble) -> None:
    site.down = True
    checker = directory(site)
    try:
        with pytest.raises(ActorCheckUnavailable) as info:
            await checker.permitted(space="ENG", actor=VIEWER, access=Access.READ)
        assert (info.value.status, info.value.code) == (503, "confluence_unavailable")
    finally:
        await checker.close()


async def test_an_unreachable_site_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def credentials() -> SecretVersion:
        return SecretVersion({"email": "e", "api_token": "t"}, version=1)

    checker = ConfluenceCloudDirectory(url=f"http://127.0.0.1:{port}", credentials=credentials)
    try:
        with pytest.raises(ActorCheckUnavailable, match="unreachable"):
            await checker.permitted(space="ENG", actor=VIEWER, access=Access.READ)
    finally:
        await checker.close()


async def test_credentials_the_secret_store_cannot_give_mean_unavailable(
    site: ConfluenceDouble,
) -> None:
    async def credentials() -> SecretVersion:
        raise SecretStoreUnavailable("vault sealed")

    checker = ConfluenceCloudDirectory(url=site.url, credentials=credentials)
    try:
        with pytest.raises(ActorCheckUnavailable, match="secret store is unreachable"):
            await checker.permitted(space="ENG", actor=VIEWER, access=Access.READ)
    finally:
        await checker.close()
    assert site.requests == []


async def test_a_slow_site_is_cut_off_at_the_deadline(site: ConfluenceDouble) -> None:
    site.delay = 2.0
    checker = directory(site, timeout_seconds=0.2)
    try:
        with pytest.raises(ActorCheckUnavailable, match=r"did not answer within 0\.2s"):
            await checker.permitted(space="ENG", actor=VIEWER, access=Access.READ)
    finally:
        await checker.close()


async def test_an_oauth_bearer_token_authenticates(site: ConfluenceDouble) -> None:
    site.bearer = "oauth-access"
    checker = directory(site, bearer=True)
    try:
        assert await checker.permitted(space="ENG", actor=VIEWER, access=Access.READ)
    finally:
        await checker.close()


async def test_an_account_that_may_not_check_others_is_a_configuration_error(
    site: ConfluenceDouble,
) -> None:
    site.admin = False
    checker = directory(site)
    try:
        with pytest.raises(ActorCheckFailed, match="403"):
            await checker.permitted(space="ENG", actor=VIEWER, access=Access.READ)
    finally:
        await checker.close()


@pytest.mark.parametrize("actor", ["", "a b", "x" * 200, "557058:ok/../admin", "ünïcode"])
async def test_an_actor_that_is_no_account_id_is_never_sent(
    site: ConfluenceDouble, actor: str
) -> None:
    checker = directory(site)
    try:
        assert not await checker.permitted(space="ENG", actor=actor, access=Access.READ)
    finally:
        await checker.close()
    assert site.requests == []


async def test_the_double_pages_with_a_cursor(site: ConfluenceDouble) -> None:
    for key in ("A", "B", "C"):
        site.add_space(key)
    pair = base64.b64encode(f"{site.email}:{site.api_token}".encode()).decode()
    headers = {"Authorization": f"Basic {pair}"}
    seen: list[str] = []
    path: str | None = "/wiki/api/v2/spaces?limit=2"
    async with aiohttp.ClientSession() as session:
        while path is not None:
            async with session.get(site.url + path, headers=headers) as answer:
                body = await answer.json()
            seen += [s["key"] for s in body["results"]]
            path = body["_links"].get("next")
    assert seen == ["A", "B", "C", "ENG"]


def test_confluence_is_pinned_to_its_configured_ca(tmp_path: Path) -> None:
    from credbroker.config import Settings
    from credbroker.wiring import build_actor_directory
    from tests.fakes import MemorySecretStore
    from tests.tls_certs import TestCa

    ca = TestCa(tmp_path)
    settings = Settings.model_validate(
        {
            "object_store": {"endpoint": "http://127.0.0.1:9"},
            "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
            "confluence": {
                "url": "https://wiki.example.org",
                "credentials_path": "credbroker/confluence",
                "ca_file": str(ca.cert_file),
            },
        }
    )
    directory = build_actor_directory(settings, MemorySecretStore())
    assert isinstance(directory, ConfluenceCloudDirectory)
    context = directory._ssl
    assert isinstance(context, ssl.SSLContext)
    certs: list[Any] = context.get_ca_certs()
    trusted = [dict(x[0] for x in cert["subject"]) for cert in certs]
    assert trusted == [{"commonName": "credbroker test CA"}]  # that CA alone, not certifi's
