"""The vend path (Broker) on in-memory fakes: every check fails a fast test when deleted.

authorize (space, access, prefix) -> TTL -> session policy -> parent key -> STS -> lifetime
check -> audit, for keys and for presigned URLs. The same path runs against real Ceph RGW in
tests/integration/test_vend_api.py; here each branch and boundary is walked in milliseconds.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from credbroker.domain import (
    Access,
    AccessKey,
    Client,
    Flavor,
    Scope,
    SecretVersion,
    SpaceTarget,
    TtlLimits,
)
from credbroker.errors import (
    InvalidRequest,
    KeyOutlivesRequest,
    NotAllowed,
    ObjectStoreRejected,
    SecretStoreCircuitOpen,
    SecretStoreUnavailable,
)
from credbroker.parent_key import ParentKeySource
from credbroker.policy import render_policy, session_policy
from credbroker.vend import (
    DEFAULT_CLOCK_SKEW_SECONDS,
    PRESIGN_MIN_TTL,
    Broker,
    Presigned,
    PresignRequest,
    Vended,
    VendRequest,
)
from tests.fakes import (
    DOWN,
    READ_ONLY_KEY,
    READ_ROLE,
    T0,
    AssumeRoleCall,
    Clock,
    FakeAudit,
    FakeFallback,
    FakeIssuer,
    FakeMetrics,
    MemorySecretStore,
    MonotonicClock,
    ScriptedStore,
)

PATH = "credbroker/object-store/service"
SERVICE = {"access_key_id": "AKSERVICE", "secret_access_key": "svc-secret-never-logged"}
ROTATED = {"access_key_id": "AKROTATED", "secret_access_key": "rotated-secret-never-logged"}
SPACES = {
    "ENG": SpaceTarget("cb-main", "ENG/"),
    "OPS": SpaceTarget("cb-ops", ""),
    "HR": SpaceTarget("cb-hr", "people/hr/"),
}
# min < default < every client's maximum < max, so each bound can be crossed on its own.
TTL = TtlLimits(min_seconds=900, default_seconds=1800, max_seconds=7200)
WRITER = Client("writer", frozenset({"ENG", "OPS"}), Access.WRITE, 3600)
READER = Client("reader", frozenset({"ENG"}), Access.READ, 3600)
LEASE_ID = re.compile(r"cb-[0-9a-f]{24}")
STALE = "InvalidAccessKeyId"


@dataclass
class Rig:
    """A Broker over fakes, with the fakes at hand."""

    flavor: Flavor = Flavor.RGW
    clock: Clock = field(default_factory=Clock)
    ticks: MonotonicClock = field(default_factory=MonotonicClock)
    audit: FakeAudit = field(default_factory=FakeAudit)
    store: MemorySecretStore = field(default_factory=MemorySecretStore)
    metrics: FakeMetrics = field(default_factory=FakeMetrics)
    fallback: FakeFallback | None = None
    cache_seconds: float = 0
    clock_skew_seconds: float = DEFAULT_CLOCK_SKEW_SECONDS
    issuer: FakeIssuer = field(default_factory=FakeIssuer)
    credentials: ParentKeySource = field(init=False)
    broker: Broker = field(init=False)

    def __post_init__(self) -> None:
        self.store.put(PATH, SERVICE)
        self.issuer.clock = self.clock
        self.issuer.endpoint = "http://s3.internal"
        self.issuer.public_endpoint = "https://s3.example"
        self.credentials = ParentKeySource(
            self.store, PATH, cache_seconds=self.cache_seconds, clock=self.ticks
        )
        self.broker = Broker(
            spaces=SPACES,
            ttl=TTL,
            credentials=self.credentials,
            issuer=self.issuer,
            audit=self.audit,
            metrics=self.metrics,
            flavor=self.flavor,
            fallback=self.fallback,
            clock=self.clock,
            clock_skew_seconds=self.clock_skew_seconds,
        )

    async def vend(self, client: Client = WRITER, **request: Any) -> Vended:
        request.setdefault("space", "ENG")
        request.setdefault("access", Access.WRITE)
        return await self.broker.vend(client, VendRequest(**request))

    async def presign(self, client: Client = WRITER, **request: Any) -> Presigned:
        request.setdefault("space", "ENG")
        request.setdefault("key", "page.html")
        request.setdefault("method", "GET")
        return await self.broker.presign(client, PresignRequest(**request))

    @property
    def call(self) -> AssumeRoleCall:
        assert len(self.issuer.calls) == 1, self.issuer.calls
        return self.issuer.calls[0]

    def refreshes(self) -> int:
        return self.metrics.parent_key_refreshes


@pytest.fixture
def rig() -> Rig:
    return Rig()


def rendered(scope: Scope, flavor: Flavor = Flavor.RGW, key: str | None = None) -> str:
    return render_policy(session_policy(scope, flavor=flavor, object_key=key), flavor=flavor)


# --- authorize: space -------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["XYZ", "HR"], ids=["unknown", "not-the-clients"])
async def test_unknown_and_foreign_spaces_get_one_answer_and_no_key(rig: Rig, space: str) -> None:
    with pytest.raises(NotAllowed) as refused:
        await rig.vend(space=space)

    assert (refused.value.code, refused.value.status) == ("space_denied", 403)
    assert refused.value.message == f"client writer may not use space {space}"
    assert rig.issuer.calls == [] and rig.store.calls == []
    assert rig.audit.events == [
        {
            "ts": T0.isoformat(),
            "event": "denied",
            "client": "writer",
            "space": space,
            "access": "write",
            "code": "space_denied",
        }
    ]


async def test_a_presign_for_a_foreign_space_is_refused_alike(rig: Rig) -> None:
    with pytest.raises(NotAllowed, match="may not use space HR") as refused:
        await rig.presign(space="HR", method="PUT")
    assert refused.value.code == "space_denied"
    assert rig.issuer.calls == [] and rig.issuer.presigns == []
    assert rig.audit.events[0]["space"] == "HR" and rig.audit.events[0]["access"] == "write"


@pytest.mark.parametrize("space", ["", "EN G", "ENG/", "../ENG", "*", "~", "E" * 256, "ENG\n"])
async def test_a_malformed_space_key_is_invalid_and_audited_without_it(
    rig: Rig, space: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await rig.vend(space=space)

    assert (refused.value.code, refused.value.status) == ("invalid_space", 400)
    assert rig.issuer.calls == []
    assert rig.audit.events == [
        {
            "ts": T0.isoformat(),
            "event": "denied",
            "client": "writer",
            "space": None,  # never echo what a client sent that is not a space key
            "access": "write",
            "code": "invalid_space",
        }
    ]


@pytest.mark.parametrize(
    ("call", "code"),
    [
        # each prefix segment is fine; together with the space's they pass the 400 cap
        ({"prefix": "/".join(["p" * 60] * 6) + "/" + "p" * 30}, "invalid_prefix"),
        ({"presign": "a\u202ereversed.txt"}, "invalid_key"),
        ({"presign": "k" * 700}, "invalid_key"),
    ],
)
async def test_every_refusal_on_the_way_to_the_policy_is_audited(
    rig: Rig, call: dict[str, str], code: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        if "presign" in call:
            await rig.presign(key=call["presign"])
        else:
            await rig.vend(prefix=call["prefix"])

    assert refused.value.code == code
    assert rig.issuer.calls == []
    assert rig.audit.events == [
        {
            "ts": T0.isoformat(),
            "event": "denied",
            "client": "writer",
            "space": None,
            "access": "write" if "prefix" in call else "read",
            "code": code,
        }
    ]


async def test_an_rgw_presign_is_sized_as_rgw_counts_not_as_minio_does(rig: Rig) -> None:
    """301 `&` fit RGW's count twice over (the Deny names the key again); MinIO's count (six
    bytes each) would refuse the same policy. The broker counts with its own flavor."""
    key = "a" + "&" * 300
    await rig.presign(key=key, method="PUT")
    scope = Scope("cb-main", "ENG/", Access.WRITE)
    expected = session_policy(scope, flavor=Flavor.RGW, object_key=key)
    assert rig.call.policy == render_policy(expected, flavor=Flavor.RGW)


async def test_personal_space_keys_are_valid_and_then_need_the_grant(rig: Rig) -> None:
    with pytest.raises(NotAllowed) as refused:
        await rig.vend(space="~jdoe")
    assert refused.value.code == "space_denied"


# --- authorize: access level ------------------------------------------------------------------


async def test_a_read_client_asking_for_write_is_refused(rig: Rig) -> None:
    with pytest.raises(NotAllowed) as refused:
        await rig.vend(READER, access=Access.WRITE)

    assert (refused.value.code, refused.value.status) == ("access_denied", 403)
    assert refused.value.message == "client reader may not have write access"
    assert rig.issuer.calls == []
    assert rig.audit.events == [
        {
            "ts": T0.isoformat(),
            "event": "denied",
            "client": "reader",
            "space": "ENG",
            "access": "write",
            "code": "access_denied",
        }
    ]


async def test_a_read_client_may_not_presign_a_put(rig: Rig) -> None:
    with pytest.raises(NotAllowed) as refused:
        await rig.presign(READER, method="PUT")
    assert refused.value.code == "access_denied"
    assert rig.issuer.calls == []


@pytest.mark.parametrize(
    ("client", "access"),
    [(READER, Access.READ), (WRITER, Access.READ), (WRITER, Access.WRITE)],
    ids=["reader-read", "writer-read", "writer-write"],
)
async def test_access_within_the_clients_maximum_is_granted_as_asked(
    rig: Rig, client: Client, access: Access
) -> None:
    vended = await rig.vend(client, access=access)

    assert vended.scope == Scope("cb-main", "ENG/", access)
    assert rig.call.policy == rendered(Scope("cb-main", "ENG/", access))


# --- authorize: prefix ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("space", "asked", "prefix"),
    [
        ("ENG", None, "ENG/"),
        ("ENG", "", "ENG/"),
        ("ENG", "reports", "ENG/reports/"),
        ("ENG", "reports/2026/", "ENG/reports/2026/"),
        ("OPS", None, ""),
        ("OPS", "logs", "logs/"),
    ],
)
async def test_a_requested_prefix_only_narrows_the_space_and_is_what_the_policy_names(
    rig: Rig, space: str, asked: str | None, prefix: str
) -> None:
    vended = await rig.vend(space=space, prefix=asked)

    bucket = SPACES[space].bucket
    assert vended.scope == Scope(bucket, prefix, Access.WRITE)
    assert rig.call.policy == rendered(Scope(bucket, prefix, Access.WRITE))
    assert rig.audit.events[-1]["prefix"] == prefix


@pytest.mark.parametrize(
    "prefix",
    ["../HR", "/abs", "a//b", "a/./b", "*", "a*", "${aws:username}", "a b", "a\nb", "x" * 401],
)
async def test_a_hostile_prefix_is_refused_before_any_key_is_asked_for(
    rig: Rig, prefix: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await rig.vend(prefix=prefix)

    assert (refused.value.code, refused.value.status) == ("invalid_prefix", 400)
    assert rig.issuer.calls == [] and rig.store.calls == []
    assert rig.audit.events == [
        {
            "ts": T0.isoformat(),
            "event": "denied",
            "client": "writer",
            "space": None,
            "access": "write",
            "code": "invalid_prefix",
        }
    ]


# --- session policy per flavor ----------------------------------------------------------------


@pytest.mark.parametrize("flavor", list(Flavor))
@pytest.mark.parametrize("access", list(Access))
@pytest.mark.parametrize(("space", "prefix"), [("ENG", None), ("ENG", "a/b"), ("OPS", None)])
async def test_the_issuer_gets_the_flavors_session_policy_for_the_scope(
    flavor: Flavor, access: Access, space: str, prefix: str | None
) -> None:
    rig = Rig(flavor=flavor)

    vended = await rig.vend(space=space, access=access, prefix=prefix)

    assert rig.call.policy == rendered(vended.scope, flavor)


async def test_the_flavors_really_differ_for_a_write_key() -> None:
    rgw, minio = Rig(flavor=Flavor.RGW), Rig(flavor=Flavor.MINIO)
    await rgw.vend()
    await minio.vend()
    assert "s3:x-amz-acl" in rgw.call.policy and "s3:x-amz-acl" not in minio.call.policy


@pytest.mark.parametrize("flavor", list(Flavor))
@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_a_presign_key_is_limited_to_its_one_object(flavor: Flavor, method: str) -> None:
    rig = Rig(flavor=flavor)

    got = await rig.presign(key="reports/q1.pdf", method=method)

    access = Access.WRITE if method == "PUT" else Access.READ
    assert got.scope == Scope("cb-main", "ENG/", access)
    assert rig.call.policy == rendered(Scope("cb-main", "ENG/", access), flavor, "reports/q1.pdf")


async def test_a_policy_too_large_for_the_flavor_is_refused_before_any_key() -> None:
    key = "&" * 690  # MinIO counts & as six bytes (Go escapes it): far over its limit
    minio = Rig(flavor=Flavor.MINIO)
    with pytest.raises(InvalidRequest) as refused:
        await minio.presign(key=key)
    assert refused.value.code == "invalid_key"
    assert minio.issuer.calls == []


async def test_minio_counts_a_presign_policy_as_minio_does() -> None:
    """A key of 348 two-byte characters: 700 bytes as MinIO counts it (well under its policy
    limit), but over 2048 as RGW counts it (\\u00e9 is six characters)."""
    key = "\u00e9" * 348
    minio = Rig(flavor=Flavor.MINIO)

    await minio.presign(key=key)

    assert minio.call.policy == rendered(Scope("cb-main", "ENG/", Access.READ), Flavor.MINIO, key)
    rgw = Rig(flavor=Flavor.RGW)
    with pytest.raises(InvalidRequest) as refused:
        await rgw.presign(key=key)
    assert refused.value.code == "invalid_key"
    assert rgw.issuer.calls == []


# --- TTL --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_max", "asked", "granted"),
    [
        (3600, None, 1800),  # the default
        (1000, None, 1000),  # the default, cut to the client's maximum
        (3600, 1, 900),  # the store's minimum
        (3600, 899, 900),
        (3600, 900, 900),
        (3600, 901, 901),
        (3600, 3599, 3599),  # the client's maximum
        (3600, 3600, 3600),
        (3600, 3601, 3600),
        (3600, 86400, 3600),
        (10_000, 7199, 7199),  # the store's maximum
        (10_000, 7200, 7200),
        (10_000, 7201, 7200),
        (600, 600, 900),  # the store's minimum wins over a client maximum below it
    ],
)
async def test_the_ttl_is_clamped_to_the_default_the_client_and_the_store(
    client_max: int, asked: int | None, granted: int
) -> None:
    rig = Rig()
    client = Client("c", frozenset({"ENG"}), Access.WRITE, client_max)

    vended = await rig.vend(client, ttl_seconds=asked)

    assert rig.call.duration_seconds == granted
    assert vended.credentials.expiration == T0 + timedelta(seconds=granted)
    assert rig.audit.events[-1]["ttl_seconds"] == granted


@pytest.mark.parametrize(
    ("client_max", "asked", "link", "sts"),
    [
        (3600, None, 900, 960),  # the store's minimum, the key a minute longer
        (3600, 1, PRESIGN_MIN_TTL, 900),  # a minute at least; the key at the store's minimum
        (3600, 59, 60, 900),
        (3600, 60, 60, 900),
        (3600, 61, 61, 900),
        (3600, 839, 839, 900),
        (3600, 840, 840, 900),
        (3600, 841, 841, 901),
        (3600, 3599, 3599, 3659),
        (3600, 3600, 3600, 3660),  # the client's maximum
        (3600, 3601, 3600, 3660),
        (10_000, 7139, 7139, 7199),
        (10_000, 7140, 7140, 7200),
        (10_000, 7150, 7150, 7200),  # the key at the store's maximum, still longer
        (10_000, 7200, 7200, 7200),
        (10_000, 7201, 7200, 7200),  # the store's maximum
        (30, 600, 60, 900),  # the link's minute wins over a tiny client maximum
    ],
)
async def test_a_presigned_urls_ttl_and_its_keys_are_clamped(
    client_max: int, asked: int | None, link: int, sts: int
) -> None:
    rig = Rig()
    client = Client("c", frozenset({"ENG"}), Access.WRITE, client_max)

    got = await rig.presign(client, ttl_seconds=asked)

    assert rig.call.duration_seconds == sts
    assert [p.expires_in for p in rig.issuer.presigns] == [link]
    assert got.expires_at == T0 + timedelta(seconds=link)
    assert rig.audit.events[-1]["ttl_seconds"] == link
    assert rig.audit.events[-1]["expires"] == (T0 + timedelta(seconds=link)).isoformat()


# --- presign requests -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["DELETE", "POST", "HEAD", "", "GETS", "G ET"])
async def test_only_get_and_put_can_be_presigned(rig: Rig, method: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await rig.presign(method=method)
    assert (refused.value.code, refused.value.status) == ("invalid_method", 400)
    assert refused.value.message == "method must be GET or PUT"
    assert rig.issuer.calls == [] and rig.audit.events == []


@pytest.mark.parametrize(("asked", "method"), [("get", "GET"), ("Put", "PUT"), ("PUT", "PUT")])
async def test_the_method_is_case_blind_and_signed_in_capitals(
    rig: Rig, asked: str, method: str
) -> None:
    got = await rig.presign(method=asked)

    assert got.method == method
    assert rig.issuer.presigns[0].method == method
    assert rig.audit.events[-1]["method"] == method


@pytest.mark.parametrize(
    "key", ["", "dir/", "../x", "a/../b", "a//b", "/abs", "a*b", "a'b", "a\x00b", " a", "a\u202eb"]
)
async def test_a_hostile_object_key_is_refused_before_any_key(rig: Rig, key: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await rig.presign(key=key)
    assert refused.value.code == "invalid_key"
    assert rig.issuer.calls == [] and rig.issuer.presigns == []


async def test_a_presigned_url_names_the_object_under_the_scopes_prefix(rig: Rig) -> None:
    got = await rig.presign(key="reports/q1.pdf", method="PUT", reason="export", rule="r-7")

    signed = rig.issuer.presigns[0]
    assert (signed.bucket, signed.key, signed.method) == ("cb-main", "ENG/reports/q1.pdf", "PUT")
    assert signed.credentials == rig.issuer.minted[0]
    assert got.url == (
        "https://s3.example/cb-main/ENG/reports/q1.pdf?X-Amz-Expires=900"
        f"&X-Amz-Credential={rig.issuer.minted[0].access_key_id}"
    )
    assert (got.key, got.method, got.mode) == ("ENG/reports/q1.pdf", "PUT", "normal")
    assert got.lease_id == rig.call.session_name
    assert LEASE_ID.fullmatch(got.lease_id)
    assert rig.audit.events == [
        {
            "ts": T0.isoformat(),
            "event": "presign",
            "lease_id": got.lease_id,
            "client": "writer",
            "space": "ENG",
            "bucket": "cb-main",
            "prefix": "ENG/",
            "access": "write",
            "ttl_seconds": 900,
            "expires": (T0 + timedelta(seconds=900)).isoformat(),
            "reason": "export",
            "rule": "r-7",
            "actor": None,
            "mode": "normal",
            "key": "ENG/reports/q1.pdf",
            "method": "PUT",
            "access_key_id": rig.issuer.minted[0].access_key_id,
        }
    ]


# --- presigned URLs never outlive their key ---------------------------------------------------


@pytest.mark.parametrize(
    ("key_life", "link"),
    [
        (960, 900),  # the key lives as asked: the link as asked
        (901, 900),
        (900, 900),
        (899, 899),  # the server cut the key short: the link with it
        (300, 300),
        (1.9, 1),
        (1, 1),
    ],
)
async def test_a_presigned_url_is_shortened_to_its_keys_life(
    rig: Rig, key_life: float, link: int
) -> None:
    rig.issuer.lifetime_seconds = key_life

    got = await rig.presign(ttl_seconds=900)

    assert rig.call.duration_seconds == 960
    assert [p.expires_in for p in rig.issuer.presigns] == [link]
    assert got.expires_at == T0 + timedelta(seconds=link)
    assert f"X-Amz-Expires={link}&" in got.url
    assert rig.audit.events[-1]["ttl_seconds"] == link


async def test_the_keys_life_is_counted_from_when_the_key_came_back() -> None:
    """The key's life left is measured after the STS call: a slow call leaves less of it."""
    rig = Rig(issuer=SlowIssuer(delay=50, lifetime_seconds=960))

    got = await rig.presign(ttl_seconds=900)  # the key comes back at T0 + 50

    assert [p.expires_in for p in rig.issuer.presigns] == [900]
    assert got.expires_at == T0 + timedelta(seconds=50 + 900)

    rig.issuer.lifetime_seconds = 500
    got = await rig.presign(ttl_seconds=900)  # at T0 + 100
    assert rig.issuer.presigns[-1].expires_in == 500
    assert got.expires_at == T0 + timedelta(seconds=100 + 500)


@pytest.mark.parametrize("key_life", [0, 0.9, -30])
async def test_a_key_that_has_already_expired_signs_nothing(rig: Rig, key_life: float) -> None:
    rig.issuer.lifetime_seconds = key_life

    with pytest.raises(KeyOutlivesRequest) as refused:
        await rig.presign()

    expiration = rig.issuer.minted[0].expiration.isoformat()
    assert refused.value.message == (
        "the object store issued a key that has already expired "
        f"({expiration}); check the clocks of both"
    )
    assert refused.value.code == "sts_duration_ignored"
    assert rig.issuer.presigns == []
    assert rig.audit.named("presign") == []


# --- keys that outlive what was asked ---------------------------------------------------------


@pytest.mark.parametrize(("over", "refused"), [(0, False), (60, False), (60.5, True), (61, True)])
async def test_a_key_outliving_the_ttl_by_more_than_the_skew_is_never_handed_out(
    rig: Rig, over: float, refused: bool
) -> None:
    rig.issuer.lifetime_seconds = 1800 + over

    if not refused:
        vended = await rig.vend()
        assert vended.credentials == rig.issuer.minted[0]
        assert rig.audit.events[-1]["event"] == "vend"
        return
    with pytest.raises(KeyOutlivesRequest) as info:
        await rig.vend()

    key = rig.issuer.minted[0]
    assert (info.value.code, info.value.status) == ("sts_duration_ignored", 502)
    assert info.value.message == (
        f"the object store issued a key valid until {key.expiration.isoformat()}, "
        f"{int(over)} s longer than asked; MinIO ignores the requested duration when the "
        "server sets MINIO_STS_DURATION: unset it (or set it no longer than "
        "object_store.ttl.min_seconds). The key was not handed out."
    )
    assert rig.audit.events == [
        {
            "ts": T0.isoformat(),
            "event": "denied",
            "client": "writer",
            "space": None,
            "bucket": "cb-main",
            "prefix": "ENG/",
            "access": "write",
            "code": "sts_duration_ignored",
            "access_key_id": key.access_key_id,
            "expires": key.expiration.isoformat(),
        }
    ]


@pytest.mark.parametrize(("over", "refused"), [(0, False), (0.5, True), (1, True)])
async def test_the_skew_allowed_is_configurable(over: float, refused: bool) -> None:
    rig = Rig(clock_skew_seconds=0)
    rig.issuer.lifetime_seconds = 1800 + over
    if refused:
        with pytest.raises(KeyOutlivesRequest):
            await rig.vend()
    else:
        await rig.vend()


async def test_a_refused_key_is_logged_by_id_never_by_secret(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.issuer.lifetime_seconds = 1800 + 3600
    with (
        caplog.at_level(logging.ERROR, logger="credbroker.vend"),
        pytest.raises(KeyOutlivesRequest),
    ):
        await rig.vend()

    key = rig.issuer.minted[0]
    assert caplog.messages == [
        f"object store issued key {key.access_key_id} valid until {key.expiration.isoformat()}, "
        f"3600 s past the {(T0 + timedelta(seconds=1800)).isoformat()} asked for: not handed out"
    ]


async def test_the_presign_key_is_checked_against_the_sts_ttl_asked(rig: Rig) -> None:
    rig.issuer.lifetime_seconds = 960 + 61
    with pytest.raises(KeyOutlivesRequest):
        await rig.presign(ttl_seconds=900)
    assert rig.issuer.presigns == []


async def test_the_ttl_asked_is_counted_from_before_the_sts_call() -> None:
    """A slow STS call stamps a later Expiration; the skew allowance absorbs it, no more."""
    rig = Rig(issuer=SlowIssuer(delay=45))
    await rig.vend()  # expires T0 + 45 + 1800: 45 s over, within the 60 s skew

    strict = Rig(issuer=SlowIssuer(delay=45), clock_skew_seconds=30)
    with pytest.raises(KeyOutlivesRequest):
        await strict.vend()


@dataclass
class SlowIssuer(FakeIssuer):
    """An issuer whose AssumeRole takes `delay` seconds of the fake clock."""

    delay: float = 0

    async def assume_role(
        self,
        parent: AccessKey,
        *,
        policy: str,
        duration_seconds: int,
        session_name: str,
        role_arn: str | None = None,
    ) -> Any:
        assert isinstance(self.clock, Clock)
        self.clock.advance(self.delay)
        return await super().assume_role(
            parent,
            policy=policy,
            duration_seconds=duration_seconds,
            session_name=session_name,
            role_arn=role_arn,
        )


# --- the parent key ---------------------------------------------------------------------------


async def test_the_service_key_read_from_the_store_signs_with_the_configured_role(
    rig: Rig,
) -> None:
    vended = await rig.vend()

    assert rig.call.parent == AccessKey(SERVICE["access_key_id"], SERVICE["secret_access_key"], 1)
    assert rig.call.role_arn is None
    assert vended.mode == "normal" and rig.audit.events[-1]["mode"] == "normal"
    assert rig.store.calls == ["read"]


async def test_during_an_outage_a_read_signs_with_the_read_only_key_and_its_role() -> None:
    rig = Rig(fallback=FakeFallback())
    rig.store.down = DOWN

    vended = await rig.vend(access=Access.READ)
    got = await rig.presign(method="GET")

    assert rig.issuer.signers == [("AKREADONLY", READ_ROLE)] * 2
    assert [c.parent for c in rig.issuer.calls] == [READ_ONLY_KEY] * 2
    assert (vended.mode, got.mode) == ("read-only", "read-only")
    assert [e["mode"] for e in rig.audit.events] == ["read-only", "read-only"]
    # The same session policy: the read-only identity's own policy only narrows it further.
    assert rig.issuer.calls[0].policy == rendered(vended.scope)


@pytest.mark.parametrize("presign", [False, True])
async def test_during_an_outage_writes_are_refused_with_the_stores_retry_after(
    presign: bool,
) -> None:
    rig = Rig(fallback=FakeFallback())
    rig.store.down = SecretStoreCircuitOpen("circuit open", retry_after=7.5)

    with pytest.raises(SecretStoreUnavailable) as refused:
        if presign:
            await rig.presign(method="PUT")
        else:
            await rig.vend(access=Access.WRITE)

    assert refused.value.message == (
        "circuit open; write access needs the secret store, reads are served read-only meanwhile"
    )
    assert refused.value.retry_after == 7.5
    assert (refused.value.code, refused.value.status) == ("vault_unavailable", 503)
    assert rig.issuer.calls == []


async def test_without_a_fallback_the_outage_itself_is_raised(rig: Rig) -> None:
    outage = SecretStoreCircuitOpen("circuit open", retry_after=3.0)
    rig.store.down = outage
    with pytest.raises(SecretStoreUnavailable) as refused:
        await rig.vend(access=Access.READ)
    assert refused.value is outage
    assert rig.issuer.calls == []


# --- a parent key rotated away: re-read once ---------------------------------------------------


async def test_a_stale_cached_key_is_re_read_and_the_call_retried_once_with_the_new_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="credbroker.vend")
    rig = Rig(cache_seconds=300)
    await rig.vend()  # caches version 1
    rig.store.put(PATH, ROTATED)  # another broker rotated it
    rig.issuer.failures.append(ObjectStoreRejected("no such key", aws_code=STALE))

    vended = await rig.vend(ttl_seconds=1000)

    first, retry = rig.issuer.calls[1:]
    assert first.parent.access_key_id == "AKSERVICE"
    assert retry.parent == AccessKey(ROTATED["access_key_id"], ROTATED["secret_access_key"], 2)
    assert (retry.policy, retry.duration_seconds, retry.session_name, retry.role_arn) == (
        first.policy,
        1000,
        first.session_name,
        None,
    )
    assert vended.credentials == rig.issuer.minted[-1]
    assert rig.refreshes() == 1
    assert rig.store.calls == ["read", "read"]
    assert caplog.messages == ["parent key v1 rejected; now using v2"]


@pytest.mark.parametrize(
    "aws_code",
    ["InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "AccessDenied"],
)
async def test_every_stale_key_answer_triggers_the_re_read(aws_code: str) -> None:
    rig = Rig(cache_seconds=300)
    await rig.vend()
    rig.store.put(PATH, ROTATED)
    rig.issuer.failures.append(ObjectStoreRejected("refused", aws_code=aws_code))

    await rig.vend()

    assert [k for k, _ in rig.issuer.signers] == ["AKSERVICE", "AKSERVICE", "AKROTATED"]


async def test_the_same_key_in_the_store_means_the_rejection_stands() -> None:
    rig = Rig(cache_seconds=300)
    await rig.vend()
    rejection = ObjectStoreRejected("no such key", aws_code=STALE)
    rig.issuer.failures.append(rejection)

    with pytest.raises(ObjectStoreRejected) as raised:
        await rig.vend()

    assert raised.value is rejection
    assert len(rig.issuer.calls) == 2  # no retry
    assert rig.store.calls == ["read", "read"]  # but the store was asked again
    assert rig.refreshes() == 0
    assert len(rig.audit.events) == 1  # the first vend's


@pytest.mark.parametrize(
    ("fresh_id", "fresh_version"),
    [("AKSERVICE", 4), ("AKROTATED", 3)],
    ids=["same-id-new-version", "new-id-same-version"],
)
async def test_a_key_that_changed_at_all_is_retried(fresh_id: str, fresh_version: int) -> None:
    fresh = SecretVersion({"access_key_id": fresh_id, "secret_access_key": "s2"}, fresh_version)
    store = ScriptedStore(SecretVersion(SERVICE, 3), fresh)
    issuer = FakeIssuer(failures=[ObjectStoreRejected("refused", aws_code=STALE)])
    broker = Broker(
        spaces=SPACES,
        ttl=TTL,
        credentials=ParentKeySource(store, PATH, cache_seconds=0),
        issuer=issuer,
        audit=FakeAudit(),
        metrics=FakeMetrics(),
        flavor=Flavor.RGW,
    )

    await broker.vend(WRITER, VendRequest(space="ENG", access=Access.WRITE))

    assert [c.parent.version for c in issuer.calls] == [3, fresh_version]
    assert issuer.calls[1].parent.access_key_id == fresh_id


async def test_a_rejection_that_is_not_about_the_key_is_not_retried(rig: Rig) -> None:
    rig.issuer.failures.append(
        ObjectStoreRejected("bad policy", aws_code="MalformedPolicyDocument")
    )
    with pytest.raises(ObjectStoreRejected, match="bad policy"):
        await rig.vend()
    assert len(rig.issuer.calls) == 1 and rig.store.calls == ["read"]


async def test_the_retry_happens_once_only() -> None:
    rig = Rig(cache_seconds=300)
    await rig.vend()
    rig.store.put(PATH, ROTATED)
    second = ObjectStoreRejected("still refused", aws_code=STALE)
    rig.issuer.failures.extend([ObjectStoreRejected("refused", aws_code=STALE), second])

    with pytest.raises(ObjectStoreRejected) as raised:
        await rig.vend()

    assert raised.value is second
    assert len(rig.issuer.calls) == 3
    assert len(rig.audit.events) == 1  # the first vend's


async def test_only_the_rejected_version_is_dropped_from_the_cache() -> None:
    """Another request may already have cached the new key: keep it, do not read again."""
    refresher = RefreshingIssuer()
    rig = Rig(cache_seconds=300, issuer=refresher)
    refresher.credentials = rig.credentials
    await rig.vend()
    rig.store.put(PATH, ROTATED)
    refresher.failures.append(ObjectStoreRejected("refused", aws_code=STALE))

    await rig.vend()

    assert rig.store.calls == ["read", "read"]  # the first vend's, and the other request's
    assert [k for k, _ in refresher.signers] == ["AKSERVICE", "AKSERVICE", "AKROTATED"]


@dataclass
class RefreshingIssuer(FakeIssuer):
    """Before refusing, lets "another request" refresh the shared credential cache."""

    credentials: ParentKeySource | None = None

    async def assume_role(
        self,
        parent: AccessKey,
        *,
        policy: str,
        duration_seconds: int,
        session_name: str,
        role_arn: str | None = None,
    ) -> Any:
        if self.failures and self.credentials is not None:
            self.credentials.invalidate()
            await self.credentials.current()
        return await super().assume_role(
            parent,
            policy=policy,
            duration_seconds=duration_seconds,
            session_name=session_name,
            role_arn=role_arn,
        )


# --- what a grant returns and records ---------------------------------------------------------


async def test_a_grant_returns_the_key_the_public_endpoint_and_the_region(rig: Rig) -> None:
    vended = await rig.vend(prefix="x", ttl_seconds=1000)

    assert vended.credentials == rig.issuer.minted[0]
    assert (vended.endpoint, vended.region) == ("https://s3.example", "us-east-1")
    assert vended.lease_id == rig.call.session_name
    assert vended.scope == Scope("cb-main", "ENG/x/", Access.WRITE)
    assert vended.mode == "normal"


async def test_a_grant_is_audited_with_every_field_and_no_secret(rig: Rig) -> None:
    rig.clock.advance(5)
    vended = await rig.vend(
        access=Access.READ, prefix="x", reason="nightly export", rule="rule-9", actor="jdoe"
    )

    key = rig.issuer.minted[0]
    assert rig.audit.events == [
        {
            "ts": rig.clock().isoformat(),
            "event": "vend",
            "lease_id": vended.lease_id,
            "client": "writer",
            "space": "ENG",
            "bucket": "cb-main",
            "prefix": "ENG/x/",
            "access": "read",
            "ttl_seconds": 1800,
            "expires": key.expiration.isoformat(),
            "reason": "nightly export",
            "rule": "rule-9",
            "actor": "jdoe",
            "mode": "normal",
            "access_key_id": key.access_key_id,
        }
    ]
    trail = json.dumps(rig.audit.events)
    for secret in (SERVICE["secret_access_key"], key.secret_access_key, key.session_token):
        assert secret not in trail


async def test_a_presign_is_audited_with_the_actor_and_no_secret(rig: Rig) -> None:
    await rig.presign(actor="jdoe", reason="share", rule="r")
    event = rig.audit.events[-1]
    assert (event["actor"], event["reason"], event["rule"]) == ("jdoe", "share", "r")
    trail = json.dumps(rig.audit.events)
    key = rig.issuer.minted[0]
    for secret in (SERVICE["secret_access_key"], key.secret_access_key, key.session_token):
        assert secret not in trail


async def test_lease_ids_are_fresh_valid_session_names(rig: Rig) -> None:
    leases = [(await rig.vend()).lease_id for _ in range(3)]
    leases.append((await rig.presign()).lease_id)

    assert all(LEASE_ID.fullmatch(lease) for lease in leases), leases
    assert len(set(leases)) == 4
    assert [c.session_name for c in rig.issuer.calls] == leases
    assert [e["lease_id"] for e in rig.audit.events] == leases


async def test_the_default_clock_is_aware_utc() -> None:
    audit = FakeAudit()
    store = MemorySecretStore()
    store.put(PATH, SERVICE)
    broker = Broker(
        spaces=SPACES,
        ttl=TTL,
        credentials=ParentKeySource(store, PATH, cache_seconds=0),
        issuer=FakeIssuer(),
        audit=audit,
        metrics=FakeMetrics(),
        flavor=Flavor.RGW,
    )

    await broker.vend(WRITER, VendRequest(space="ENG", access=Access.WRITE))

    stamped = datetime.fromisoformat(audit.events[0]["ts"])
    assert stamped.utcoffset() == timedelta(0)
    assert abs((stamped - datetime.now(UTC)).total_seconds()) < 60
