"""ports.ActorDirectory: one suite, run unchanged against the Confluence double and, when
given, a real Confluence Cloud site:

    CONFLUENCE_URL=https://SITE.atlassian.net CONFLUENCE_EMAIL=... CONFLUENCE_API_TOKEN=...
    CONFLUENCE_SPACE=KEY            a space whose permissions you set up as below
    CONFLUENCE_EDITOR=accountId     may view and edit it
    CONFLUENCE_VIEWER=accountId     may view it, not edit it
    CONFLUENCE_OUTSIDER=accountId   may not view it

The API token's account must be a Confluence Administrator (checking another account's
permissions needs it).

The same suite runs against Confluence Data Center (the double, and a real server when given):

    CONFLUENCE_DC_URL=https://wiki.example.internal CONFLUENCE_DC_TOKEN=<personal access token>
    CONFLUENCE_DC_SPACE=KEY  CONFLUENCE_DC_EDITOR=username  CONFLUENCE_DC_VIEWER=username
    CONFLUENCE_DC_OUTSIDER=username

The token's account must administer Confluence (or the space)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from credbroker.confluence.cloud import ConfluenceCloudDirectory
from credbroker.confluence.datacenter import ConfluenceDataCenterDirectory
from credbroker.domain import Access, SecretVersion
from credbroker.errors import ActorCheckFailed
from tests.doubles.confluence import ConfluenceDataCenterDouble, ConfluenceDouble

_REAL = (
    "CONFLUENCE_URL",
    "CONFLUENCE_EMAIL",
    "CONFLUENCE_API_TOKEN",
    "CONFLUENCE_SPACE",
    "CONFLUENCE_EDITOR",
    "CONFLUENCE_VIEWER",
    "CONFLUENCE_OUTSIDER",
)
_REAL_DC = (
    "CONFLUENCE_DC_URL",
    "CONFLUENCE_DC_TOKEN",
    "CONFLUENCE_DC_SPACE",
    "CONFLUENCE_DC_EDITOR",
    "CONFLUENCE_DC_VIEWER",
    "CONFLUENCE_DC_OUTSIDER",
)


@dataclass
class Site:
    url: str
    email: str
    api_token: str
    space: str
    editor: str
    viewer: str
    outsider: str
    deployment: str = "cloud"

    def directory(self, *, api_token: str | None = None) -> ConfluenceCloudDirectory:
        token = api_token or self.api_token
        if self.deployment == "datacenter":
            pat = SecretVersion({"token": token}, version=1)

            async def personal_access_token() -> SecretVersion:
                return pat

            return ConfluenceDataCenterDirectory(
                url=self.url, credentials=personal_access_token, cache_seconds=0
            )
        secret = SecretVersion({"email": self.email, "api_token": token}, version=1)

        async def credentials() -> SecretVersion:
            return secret

        return ConfluenceCloudDirectory(url=self.url, credentials=credentials, cache_seconds=0)


@pytest.fixture(params=["cloud-double", "cloud-real", "datacenter-double", "datacenter-real"])
async def site(request: pytest.FixtureRequest) -> AsyncIterator[Site]:
    if request.param == "cloud-real":
        missing = [name for name in _REAL if not os.environ.get(name)]
        if missing:
            pytest.skip(f"a real Confluence site needs {', '.join(missing)}")
        yield Site(*(os.environ[name] for name in _REAL))
        return
    if request.param == "datacenter-real":
        missing = [name for name in _REAL_DC if not os.environ.get(name)]
        if missing:
            pytest.skip(f"a real Confluence Data Center needs {', '.join(missing)}")
        url, token, space, editor, viewer, outsider = (os.environ[n] for n in _REAL_DC)
        yield Site(url, "", token, space, editor, viewer, outsider, "datacenter")
        return
    if request.param == "datacenter-double":
        dc = ConfluenceDataCenterDouble(pat="double-personal-access-token")
        await dc.start()
        dc.add_space("OTHER")
        dc.add_space("ENG")
        dc.grant("ENG", "editor", edit=True)
        dc.grant("ENG", "viewer")
        dc.grant("OTHER", "outsider", edit=True)
        yield Site(dc.url, "", dc.pat, "ENG", "editor", "viewer", "outsider", "datacenter")
        await dc.close()
        return
    double = ConfluenceDouble(email="broker@example.org", api_token="double-api-token")
    await double.start()
    double.add_space("OTHER")
    double.add_space("ENG")
    double.grant("ENG", "557058:editor", edit=True)
    double.grant("ENG", "557058:viewer")
    double.grant("OTHER", "557058:outsider", edit=True)
    yield Site(
        double.url,
        double.email,
        double.api_token,
        "ENG",
        "557058:editor",
        "557058:viewer",
        "557058:outsider",
    )
    await double.close()


@pytest.fixture
async def directory(site: Site) -> AsyncIterator[ConfluenceCloudDirectory]:
    checker = site.directory()
    yield checker
    await checker.close()


async def test_an_editor_may_read_and_write(
    site: Site, directory: ConfluenceCloudDirectory
) -> None:
    assert await directory.permitted(space=site.space, actor=site.editor, access=Access.READ)
    assert await directory.permitted(space=site.space, actor=site.editor, access=Access.WRITE)


async def test_a_viewer_may_read_only(site: Site, directory: ConfluenceCloudDirectory) -> None:
    assert await directory.permitted(space=site.space, actor=site.viewer, access=Access.READ)
    assert not await directory.permitted(space=site.space, actor=site.viewer, access=Access.WRITE)


async def test_an_outsider_may_do_neither(site: Site, directory: ConfluenceCloudDirectory) -> None:
    for access in Access:
        assert not await directory.permitted(space=site.space, actor=site.outsider, access=access)


async def test_an_account_confluence_does_not_know_may_do_nothing(
    site: Site, directory: ConfluenceCloudDirectory
) -> None:
    unknown = "557058:00000000-0000-0000-0000-000000000000"
    assert not await directory.permitted(space=site.space, actor=unknown, access=Access.READ)


async def test_a_space_confluence_does_not_know_is_a_configuration_error(
    directory: ConfluenceCloudDirectory,
) -> None:
    with pytest.raises(ActorCheckFailed, match="knows no space NOSUCHSPACE42"):
        await directory.permitted(space="NOSUCHSPACE42", actor="557058:x", access=Access.READ)


async def test_wrong_credentials_are_a_configuration_error_not_a_no(site: Site) -> None:
    checker = site.directory(api_token="not-the-token")
    try:
        with pytest.raises(ActorCheckFailed) as info:
            await checker.permitted(space=site.space, actor=site.viewer, access=Access.READ)
        assert info.value.status == 502 and "not-the-token" not in info.value.message
    finally:
        await checker.close()
