"""The Confluence Data Center adapter's behaviour around the answers (the contract suite covers
the answers themselves): personal-access-token auth, the cache, 429 with Retry-After, an
outage, the deadline, user keys, a broker account that may not read others' permissions, and
the token never reaching a log line or an error."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Literal

import pytest

from credbroker.confluence.datacenter import ConfluenceDataCenterDirectory
from credbroker.domain import Access, SecretVersion
from credbroker.errors import ActorCheckFailed, ActorCheckUnavailable
from tests.doubles.confluence import ConfluenceDataCenterDouble
from tests.fakes import MonotonicClock

PAT = "NjQ2MzkxNjE4NDI4OsecretPAT"


@pytest.fixture
async def site() -> AsyncIterator[ConfluenceDataCenterDouble]:
    double = ConfluenceDataCenterDouble(pat=PAT)
    await double.start()
    double.add_space("ENG")
    double.grant("ENG", "viewer")
    double.grant("ENG", "editor", edit=True)
    yield double
    await double.close()


class Slept:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def directory(
    site: ConfluenceDataCenterDouble,
    *,
    token: str = PAT,
    actor_id: Literal["username", "key"] = "username",
    **options: object,
) -> ConfluenceDataCenterDirectory:
    async def credentials() -> SecretVersion:
        return SecretVersion({"token": token}, version=1)

    return ConfluenceDataCenterDirectory(
        url=site.url,
        credentials=credentials,
        actor_id=actor_id,
        **options,  # type: ignore[arg-type]
    )


async def test_the_pat_is_sent_as_a_bearer_token_and_never_logged(
    site: ConfluenceDataCenterDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    site.rate_limit(1, retry_after=0)
    checker = directory(site, sleep=Slept())
    try:
        assert await checker.permitted(space="ENG", actor="editor", access=Access.WRITE)
    finally:
        await checker.close()
    wrong = directory(site, token="wrong-" + PAT)
    try:
        with pytest.raises(ActorCheckFailed) as info:
            await wrong.permitted(space="ENG", actor="editor", access=Access.READ)
    finally:
        await wrong.close()
    assert (info.value.status, info.value.code) == (502, "confluence_rejected")
    assert PAT not in info.value.message and PAT not in repr(info.value)
    assert PAT not in caplog.text
    assert "429" in caplog.text  # something was logged, just not the token


async def test_only_the_personal_access_token_opens_data_center(
    site: ConfluenceDataCenterDouble,
) -> None:
    site.bearer = PAT  # the Cloud double's OAuth slot must not open the DC double
    checker = directory(site, token="")
    try:
        with pytest.raises(ActorCheckFailed, match="401"):
            await checker.permitted(space="ENG", actor="viewer", access=Access.READ)
    finally:
        await checker.close()


async def test_a_user_key_is_resolved_to_the_username(site: ConfluenceDataCenterDouble) -> None:
    checker = directory(site, actor_id="key")
    try:
        key = site.users["viewer"]
        assert await checker.permitted(space="ENG", actor=key, access=Access.READ)
        assert not await checker.permitted(space="ENG", actor=key, access=Access.WRITE)
        # a username is not a key: nobody
        assert not await checker.permitted(space="ENG", actor="editor", access=Access.READ)
    finally:
        await checker.close()


async def test_answers_are_cached_briefly(site: ConfluenceDataCenterDouble) -> None:
    clock = MonotonicClock()
    checker = directory(site, clock=clock, cache_seconds=60)
    try:
        assert await checker.permitted(space="ENG", actor="viewer", access=Access.READ)
        assert checker.calls == 3  # space, user, permissions
        site.spaces["ENG"].viewers.clear()
        assert await checker.permitted(space="ENG", actor="viewer", access=Access.READ)
        assert checker.calls == 3
        clock.advance(61)
        assert not await checker.permitted(space="ENG", actor="viewer", access=Access.READ)
    finally:
        await checker.close()


async def test_a_long_429_is_unavailable_with_retry_after(
    site: ConfluenceDataCenterDouble,
) -> None:
    checker = directory(site, sleep=Slept(), max_retry_after_seconds=2)
    site.rate_limit(1, retry_after=30)
    try:
        with pytest.raises(ActorCheckUnavailable) as info:
            await checker.permitted(space="ENG", actor="viewer", access=Access.READ)
        assert info.value.retry_after == 30
    finally:
        await checker.close()


async def test_down_or_slow_is_unavailable(site: ConfluenceDataCenterDouble) -> None:
    site.down = True
    checker = directory(site)
    try:
        with pytest.raises(ActorCheckUnavailable) as info:
            await checker.permitted(space="ENG", actor="viewer", access=Access.READ)
        assert (info.value.status, info.value.code) == (503, "confluence_unavailable")
    finally:
        await checker.close()
    site.down, site.delay = False, 2.0
    slow = directory(site, timeout_seconds=0.2)
    try:
        with pytest.raises(ActorCheckUnavailable, match=r"within 0\.2s"):
            await slow.permitted(space="ENG", actor="viewer", access=Access.READ)
    finally:
        await slow.close()


@pytest.mark.parametrize("status", [200, 500])
async def test_an_account_that_may_not_read_permissions_is_a_configuration_error(
    site: ConfluenceDataCenterDouble, status: int
) -> None:
    site.admin = False
    site.rpc_error_status = status  # a JSON-RPC error is never taken for an outage
    checker = directory(site)
    try:
        with pytest.raises(ActorCheckFailed, match="administer"):
            await checker.permitted(space="ENG", actor="viewer", access=Access.READ)
    finally:
        await checker.close()


@pytest.mark.parametrize("actor", ["", "a b", "x" * 300, "viewer/../admin", "a?b", "a&key=b"])
async def test_an_actor_that_is_no_username_is_never_sent(
    site: ConfluenceDataCenterDouble, actor: str
) -> None:
    checker = directory(site)
    try:
        assert not await checker.permitted(space="ENG", actor=actor, access=Access.READ)
    finally:
        await checker.close()
    assert site.requests == []


def test_deployment_datacenter_wires_the_data_center_adapter() -> None:
    from credbroker.config import Settings
    from credbroker.wiring import build_actor_directory
    from tests.fakes import MemorySecretStore

    settings = Settings.model_validate(
        {
            "object_store": {"endpoint": "http://127.0.0.1:9"},
            "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
            "confluence": {
                "url": "https://wiki.example.internal",
                "deployment": "datacenter",
                "auth": "bearer",
                "actor_id": "key",
                "credentials_path": "credbroker/confluence-dc",
            },
        }
    )
    directory = build_actor_directory(settings, MemorySecretStore())
    assert isinstance(directory, ConfluenceDataCenterDirectory)
    assert directory._actor_id == "key" and directory._auth == "bearer"


async def test_a_5xx_without_a_json_rpc_error_is_an_outage(
    site: ConfluenceDataCenterDouble,
) -> None:
    checker = directory(site)
    try:
        assert await checker.permitted(space="ENG", actor="viewer", access=Access.READ)
        site.down = True  # 503, plain text; space and user are cached, so the RPC meets it
        checker._answers.clear()
        with pytest.raises(ActorCheckUnavailable):
            await checker.permitted(space="ENG", actor="viewer", access=Access.READ)
    finally:
        await checker.close()
