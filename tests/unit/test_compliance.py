"""The compliance check on fakes of its ports: each control fails a fast test when it stops
finding what it must find, and the run records a summary in the audit trail."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from credbroker.compliance.access_report import access_report, as_csv
from credbroker.compliance.check import ComplianceCheck, RotationPolicy
from credbroker.compliance.html import render_html
from credbroker.compliance.job import DailyCompliance
from credbroker.compliance.model import ComplianceResult
from credbroker.compliance.trail import TrailUsage, space_of
from credbroker.compliance.usage import LatestUsage, LeaseUsage
from credbroker.domain import (
    Access,
    Client,
    Principal,
    Role,
    RotationRecord,
    SpaceTarget,
    TokenRecord,
    TtlLimits,
)
from credbroker.errors import ObjectStoreUnavailable, RotationBusy
from credbroker.leases import Lease
from credbroker.rotation.schedule import Schedule
from tests.fake_leases import MemoryLeaseLog
from tests.fakes import FakeAudit, MemoryPrincipalStore

NOW = datetime.fromisoformat("2026-11-30T12:30:00+00:00")
SPACES = {"ENG": SpaceTarget("main", "ENG/"), "FIN": SpaceTarget("other", "fin/")}
WRITER = Client("writer", frozenset({"ENG"}), Access.WRITE, 1800)
READER = Client("reader", frozenset({"FIN"}), Access.READ, 3600)


def grant(minutes_ago: float, client: str = "writer", **fields: Any) -> dict[str, Any]:
    at = NOW - timedelta(minutes=minutes_ago)
    record = {
        "ts": at.isoformat(),
        "event": "vend",
        "client": client,
        "bucket": "main" if client == "writer" else "other",
        "prefix": "ENG/" if client == "writer" else "fin/",
        "access": "write" if client == "writer" else "read",
        "ttl_seconds": 900,
        "expires": (at + timedelta(seconds=900)).isoformat(),
        "mode": "normal",
    }
    return {**record, **fields}


class Exposure:
    def __init__(self) -> None:
        self.public: dict[str, list[str]] = {}
        self.down = False

    async def public_findings(self, bucket: str) -> tuple[list[str], list[str]]:
        if self.down:
            raise ObjectStoreUnavailable("connection refused")
        return self.public.get(bucket, []), [f"asked about {bucket}"]

    async def close(self) -> None:
        return None


class Probe:
    def __init__(self) -> None:
        self.writes = False
        self.asked: list[tuple[str, str]] = []

    async def write_refused(self, bucket: str, key: str) -> tuple[bool, list[str]]:
        self.asked.append((bucket, key))
        return (not self.writes), ["PUT ... WRITTEN" if self.writes else "PUT ... refused 403"]

    async def close(self) -> None:
        return None


class Trail:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.items = records
        self.problem: str | None = None

    async def records(self, since: datetime, until: datetime) -> list[Mapping[str, Any]]:
        return [r for r in self.items if since <= datetime.fromisoformat(str(r["ts"])) < until]

    async def verify(self, since: datetime) -> tuple[bool, str | None, list[dict[str, Any]]]:
        chain = {"chain": "h:1:1", "status": "closed", "first_seq": 1, "last_seq": 9}
        return self.problem is None, self.problem, [{**chain, "checkpoints": 1}]


class States:
    def __init__(self) -> None:
        self.records: dict[str, RotationRecord] = {}
        self.held: set[str] = set()
        self.kind = "memory"

    async def load(self, credential: str) -> RotationRecord | None:
        return self.records.get(credential)

    async def save(self, record: RotationRecord) -> None:
        self.records[record.credential] = record

    async def all(self) -> list[RotationRecord]:
        return list(self.records.values())

    @contextlib.asynccontextmanager
    async def lock(self, credential: str) -> AsyncIterator[None]:
        if credential in self.held:
            raise RotationBusy("held")
        self.held.add(credential)
        try:
            yield
        finally:
            self.held.discard(credential)

    async def close(self) -> None:
        return None


class Rig:
    def __init__(self) -> None:
        self.exposure, self.probe, self.state, self.audit = (
            Exposure(),
            Probe(),
            States(),
            FakeAudit(),
        )
        self.trail = Trail([grant(5), grant(65), grant(30, "reader")])
        self.insecure: list[str] = []
        self.accepted: list[str] = []
        self.principals = MemoryPrincipalStore()
        self.leases = MemoryLeaseLog()
        self.require_dated = False
        self.state.records["service"] = RotationRecord(
            credential="service",
            current_key_id="AK1",
            current_key_since=NOW - timedelta(days=3),
            last_success_at=NOW - timedelta(days=3),
        )

    async def run(self) -> ComplianceResult:
        check = ComplianceCheck(
            spaces=SPACES,
            clients=[WRITER, READER],
            ttl=TtlLimits(900, 900, 3600),
            clock_skew_seconds=60,
            exposure=self.exposure,
            write_probe=self.probe,
            canary_name=".canary",
            state=self.state,
            rotations=[RotationPolicy("service", Schedule(interval_seconds=7 * 86400), 60)],
            trail=self.trail,
            usage=LatestUsage([LeaseUsage(self.leases), TrailUsage(self.trail)]),
            unused_days=30,
            principals=self.principals,
            token_max_age_days=90,
            require_dated_tokens=self.require_dated,
            insecure_transport=self.insecure,
            accepted_insecure=self.accepted,
            audit=self.audit,
            clock=lambda: NOW,
        )
        return await check.run()


def by_name(result: ComplianceResult, name: str) -> Any:
    return next(c for c in result.controls if c.name == name)


@pytest.fixture
def rig() -> Rig:
    return Rig()


async def test_everything_right_passes_and_is_recorded(rig: Rig) -> None:
    result = await rig.run()
    assert result.passed, result.as_dict()
    [summary] = rig.audit.named("compliance")
    assert summary["status"] == "pass" and summary["failed"] == []
    assert rig.probe.asked[0][0] == "main" and rig.probe.asked[0][1].startswith("ENG/.canary/")
    assert result.vends_per_hour["ENG"][-1] == 1 and result.vends_per_hour["ENG"][-2] == 1
    assert result.vends_per_hour["FIN"][-1] == 1


async def test_a_public_bucket_fails(rig: Rig) -> None:
    rig.exposure.public["other"] = ["bucket policy statement 0 allows Principal *"]
    result = await rig.run()
    assert result.failed() == ["buckets_not_public"]
    assert "other: PUBLIC: bucket policy statement 0 allows Principal *" in (
        by_name(result, "buckets_not_public").evidence
    )
    assert rig.audit.named("compliance")[0]["failed"] == ["buckets_not_public"]


async def test_an_object_store_that_does_not_answer_fails_the_control(rig: Rig) -> None:
    rig.exposure.down = True
    result = await rig.run()
    failed = by_name(result, "buckets_not_public")
    assert not failed.passed and "connection refused" in failed.evidence[0]


async def test_a_read_only_identity_that_writes_fails(rig: Rig) -> None:
    rig.probe.writes = True
    assert (await rig.run()).failed() == ["read_only_cannot_write"]


@pytest.mark.parametrize("change", ["old", "failed", "missing"])
async def test_stale_or_failing_keys_fail(rig: Rig, change: str) -> None:
    record = rig.state.records["service"]
    if change == "old":
        rig.state.records["service"] = replace(
            record, current_key_since=NOW - timedelta(days=7, hours=2)
        )
    elif change == "failed":
        rig.state.records["service"] = replace(record, last_error="boom", attempts=1)
    else:
        del rig.state.records["service"]
    assert (await rig.run()).failed() == ["keys_fresh"]


async def test_a_key_inside_its_period_and_grace_passes(rig: Rig) -> None:
    rig.state.records["service"] = replace(
        rig.state.records["service"], current_key_since=NOW - timedelta(days=7, minutes=30)
    )
    assert (await rig.run()).passed


@pytest.mark.parametrize(
    "fields",
    [{"ttl_seconds": 3601}, {"ttl_seconds": 1801}, {"expires": NOW.isoformat() + "X"}],
)
async def test_a_grant_over_its_ttl_fails(rig: Rig, fields: dict[str, Any]) -> None:
    if "expires" in fields:
        fields = {"expires": (NOW + timedelta(hours=3)).isoformat()}
    rig.trail.items.append(grant(1, **fields))
    assert (await rig.run()).failed() == ["ttl_within_policy"]


async def test_unused_write_and_unused_clients_fail(rig: Rig) -> None:
    rig.trail.items = [grant(10, access="read"), grant(60 * 24 * 31, "reader")]
    result = await rig.run()
    assert sorted(result.failed()) == ["clients_used", "write_used"]
    assert by_name(result, "write_used").evidence[0].startswith("UNUSED: writer")
    assert by_name(result, "clients_used").evidence[0].startswith("UNUSED: reader")


async def test_insecure_transport_fails_unless_accepted(rig: Rig) -> None:
    rig.insecure = ["secret_store.url http://vault.example:8200 (plain http)"]
    assert (await rig.run()).failed() == ["transport_secure"]
    rig.accepted = ["secret_store.url"]
    assert (await rig.run()).passed


async def test_a_broken_chain_fails_and_break_glass_is_listed(rig: Rig) -> None:
    rig.trail.problem = "audit.jsonl:4: chain h:1:1: seq 4 where 3 was due"
    rig.trail.items.append(grant(2, mode="break-glass", lease_id="cb-glass"))
    result = await rig.run()
    assert result.failed() == ["audit_chain"]
    assert by_name(result, "audit_chain").evidence[0].startswith("FIRST PROBLEM: audit.jsonl:4")
    assert "lease_id=cb-glass" in by_name(result, "break_glass").evidence[0]
    html = render_html(result)
    assert 'id="failed">1<' in html and "cb-glass" in html and "<script" not in html


async def test_the_daily_job_runs_once_a_day_across_replicas(rig: Rig) -> None:
    runs: list[ComplianceResult] = []
    published: list[ComplianceResult] = []

    async def run() -> ComplianceResult:
        result = await rig.run()
        runs.append(result)
        return result

    async def publish(result: ComplianceResult) -> None:
        published.append(result)

    async def state() -> States:
        return rig.state

    now = [NOW]
    replicas = [DailyCompliance(run, publish, state, clock=lambda: now[0]) for _ in range(2)]
    assert await replicas[0].once() is not None
    assert await replicas[1].once() is None  # the same day: already run by the first
    async with rig.state.lock("compliance-daily"):  # another replica is running it
        now[0] = NOW + timedelta(days=1)
        assert await replicas[1].once() is None
    assert await replicas[1].once() is not None  # the next day, once
    assert len(runs) == len(published) == 2
    assert rig.state.records["compliance-daily"].last_success_at is not None


def test_the_access_report_counts_grants_denials_and_degraded_periods() -> None:
    records = [
        grant(50, rule="r1", actor="a1"),
        grant(40, rule="r1", actor="a1"),
        grant(30, "reader", mode="read-only"),
        grant(20, "reader", mode="read-only"),
        grant(10, "reader"),
        {"ts": NOW.isoformat(), "event": "denied", "client": "reader", "code": "access_denied"},
        {"ts": (NOW - timedelta(days=3)).isoformat(), "event": "vend", "client": "writer"},
    ]
    report = access_report(
        records,
        start=NOW - timedelta(days=1),
        end=NOW + timedelta(minutes=1),
        space=None,
        client=None,
        space_of=lambda r: space_of(SPACES, r),
    )
    writer = next(g for g in report["grants"] if g["client"] == "writer")
    assert (writer["space"], writer["access"], writer["count"], writer["rule"]) == (
        "ENG",
        "write",
        2,
        "r1",
    )
    assert report["denials"] == [
        {"client": "reader", "space": "-", "event": "denied", "reason": "access_denied", "count": 1}
    ]
    assert [p["grants"] for p in report["degraded"]] == [2]
    only_fin = access_report(
        records,
        start=NOW - timedelta(days=1),
        end=NOW + timedelta(minutes=1),
        space="FIN",
        client=None,
        space_of=lambda r: space_of(SPACES, r),
    )
    assert {g["client"] for g in only_fin["grants"]} == {"reader"}
    csv_text = as_csv(report)
    assert csv_text.splitlines()[0].startswith("kind,client,space,access")
    assert "grant,writer,ENG,write,vend,r1,a1,normal,,2," in csv_text


async def test_only_a_collected_break_glass_key_counts_as_a_grant(rig: Rig) -> None:
    """Every break-glass step's record says mode break-glass; only a successful collect hands
    a key out (breakglass.py)."""
    for step, outcome in (
        ("request", "ok"),
        ("approve", "ok"),
        ("collect", "escrow_sealed"),
        ("collect", "ok"),
        ("close", "ok"),
    ):
        rig.trail.items.append(
            grant(3, event="break_glass", step=step, outcome=outcome, mode="break-glass")
        )
    result = await rig.run()
    assert by_name(result, "break_glass").summary == "1 break-glass grant(s) in the last day"


# --- token age, and usage from the lease table and the live principals ---------------------------

BOT = Client("ci-bot", frozenset({"ENG"}), Access.WRITE, 900)
SHA = "ab" * 32  # a token hash: must never appear in evidence
LEASE_IDS = itertools.count(1)


def lease(client: str, days_ago: float, access: str = "read") -> Lease:
    at = NOW - timedelta(days=days_ago)
    return Lease(
        lease_id=f"cb-{next(LEASE_IDS):024x}",
        kind="vend",
        client=client,
        space="ENG",
        bucket="main",
        prefix="ENG/",
        access=access,
        ttl_seconds=900,
        issued_at=at,
        expires_at=at + timedelta(seconds=900),
        mode="normal",
        access_key_id="ASIAEXAMPLE",
    )


async def add_bot(rig: Rig, *tokens: TokenRecord, client: Client = BOT) -> None:
    await rig.principals.add_principal(
        Principal(client=client, created_at=NOW - timedelta(days=200), created_by="admin")
    )
    rig.principals.token_rows.update({t.id: t for t in tokens})
    # used today (read and write), so only the token decides
    await rig.leases.add_leases([lease(client.id, 0.1, "write")])


def token(days_old: float, n: int = 1, **changes: Any) -> TokenRecord:
    record = TokenRecord(
        id=f"tok_{n:016x}",
        client_id="ci-bot",
        sha256=SHA,
        created_at=NOW - timedelta(days=days_old),
    )
    return replace(record, **changes)


async def test_a_store_token_younger_than_the_maximum_passes_with_its_age(rig: Rig) -> None:
    await add_bot(rig, token(89))
    result = await rig.run()
    assert result.passed, result.as_dict()
    control = by_name(result, "token_age")
    assert (
        "ci-bot: token tok_0000000000000001 created 2026-09-02T12:30:00Z (89 d 0 h old), "
        "expires never" in control.evidence
    )


async def test_a_store_token_older_than_the_maximum_fails_naming_client_token_and_age(
    rig: Rig,
) -> None:
    await add_bot(rig, token(10, 1), token(120, 2))
    result = await rig.run()
    assert result.failed() == ["token_age"]
    control = by_name(result, "token_age")
    assert control.summary == "1 token(s) older than 90 days: ci-bot/tok_0000000000000002"
    [old] = [e for e in control.evidence if "OLDER" in e]
    assert old.startswith("ci-bot: token tok_0000000000000002 created ")
    assert "(120 d 0 h old)" in old and old.endswith("OLDER THAN THE MAXIMUM OF 90 DAYS")
    assert SHA not in str(result.as_dict()) and SHA[:8] not in str(result.as_dict())


async def test_revoked_or_expired_old_tokens_and_revoked_principals_do_not_count(
    rig: Rig,
) -> None:
    await add_bot(
        rig,
        token(200, 1, revoked_at=NOW - timedelta(days=1)),
        token(200, 2, expires_at=NOW - timedelta(seconds=1)),
        token(5, 3, expires_at=NOW + timedelta(days=30)),
    )
    gone = Client("gone-bot", frozenset({"ENG"}), Access.WRITE, 900)
    await rig.principals.add_principal(Principal(client=gone, created_at=NOW))
    rig.principals.token_rows["tok_00000000000000ff"] = token(300, 255, client_id="gone-bot")
    await rig.principals.revoke_principal("gone-bot", NOW - timedelta(days=2))
    result = await rig.run()
    assert result.passed, result.as_dict()
    evidence = by_name(result, "token_age").evidence
    assert [e.split(" created")[0] for e in evidence if e.startswith("ci-bot")] == [
        "ci-bot: token tok_0000000000000003"
    ]
    assert not [e for e in evidence if "gone-bot" in e]


async def test_config_file_tokens_are_listed_as_not_checkable(rig: Rig) -> None:
    result = await rig.run()
    control = by_name(result, "token_age")
    assert control.passed
    assert control.evidence == [
        "reader: not checkable: config-file token (no creation date)",
        "writer: not checkable: config-file token (no creation date)",
    ]
    assert control.summary.endswith("2 config-file token(s) not checkable (no date)")


async def test_require_dated_tokens_fails_config_file_tokens(rig: Rig) -> None:
    rig.require_dated = True
    result = await rig.run()
    assert result.failed() == ["token_age"]
    control = by_name(result, "token_age")
    assert "reader, writer" in control.summary
    assert "WRITER: NOT CHECKABLE: CONFIG-FILE TOKEN (NO CREATION DATE)" in control.evidence


async def test_a_config_client_shadows_a_store_principal_of_the_same_id(rig: Rig) -> None:
    """The config wins in the control plane (its store tokens are not accepted): the check
    neither ages those tokens nor counts the principal twice."""
    shadow = replace(BOT, id="writer")
    await add_bot(rig, token(300, client_id="writer"), client=shadow)
    result = await rig.run()
    assert result.passed, result.as_dict()
    assert not [e for e in by_name(result, "token_age").evidence if "tok_" in e]
    assert len([e for e in by_name(result, "clients_used").evidence if "writer" in e]) == 1


async def test_usage_from_the_lease_table_survives_a_rotated_audit_file(rig: Rig) -> None:
    rig.trail.items = []  # the audit file was rotated away: only the lease table remembers
    await rig.leases.add_leases(
        [lease("writer", 29, "write"), lease("writer", 2), lease("reader", 20)]
    )
    result = await rig.run()
    assert result.passed, result.as_dict()
    assert (
        "writer: last write grant " + (NOW - timedelta(days=29)).strftime("%Y-%m-%dT%H:%M:%SZ")
        in by_name(result, "write_used").evidence
    )


async def test_leases_older_than_the_window_fail_the_usage_controls(rig: Rig) -> None:
    rig.trail.items = []
    await rig.leases.add_leases(
        [lease("writer", 31, "write"), lease("writer", 3), lease("reader", 45)]
    )
    result = await rig.run()
    assert sorted(result.failed()) == ["clients_used", "write_used"]
    assert by_name(result, "write_used").evidence[0].startswith("UNUSED: writer: last write")
    assert by_name(result, "clients_used").evidence[0] == "UNUSED: reader: last grant None"


async def test_a_store_principal_unused_or_never_writing_fails(rig: Rig) -> None:
    await rig.principals.add_principal(Principal(client=BOT, created_at=NOW - timedelta(days=60)))
    ops = Client("ops-admin", frozenset(), Access.READ, 900, frozenset({Role.ADMIN}))
    await rig.principals.add_principal(Principal(client=ops, created_at=NOW))  # not a rule
    result = await rig.run()
    assert sorted(result.failed()) == ["clients_used", "write_used"]
    assert by_name(result, "clients_used").evidence[0] == "UNUSED: ci-bot: last grant None"
    assert by_name(result, "write_used").evidence[0] == "UNUSED: ci-bot: last write grant None"
    assert not [e for e in by_name(result, "clients_used").evidence if "ops-admin" in e]

    await rig.leases.add_leases([lease("ci-bot", 1, "read")])  # used, but never wrote
    result = await rig.run()
    assert result.failed() == ["write_used"]
    assert by_name(result, "write_used").evidence[0] == "UNUSED: ci-bot: last write grant None"


async def test_a_principal_store_that_does_not_answer_fails_the_controls_it_feeds(
    rig: Rig,
) -> None:
    rig.principals.fail = True
    result = await rig.run()
    assert sorted(result.failed()) == ["clients_used", "token_age", "write_used"]
    assert by_name(result, "token_age").evidence == ["state_store_error: memory store down"]


async def test_latest_usage_keeps_the_later_time_of_each_source() -> None:
    leases, trail = MemoryLeaseLog(), Trail([grant(60, access="read")])
    await leases.add_leases(
        [lease("writer", 3, "write"), lease("writer", 0.5), lease("writer", -1)]
    )
    since, until = NOW - timedelta(days=30), NOW
    both = LatestUsage([LeaseUsage(leases), TrailUsage(trail)])
    # the lease issued after `until` is not counted; the trail's read an hour ago is later
    assert await both.last_use(since, until, ["writer", "reader"]) == {
        "writer": (NOW - timedelta(minutes=60), NOW - timedelta(days=3))
    }
    assert await LeaseUsage(leases).last_use(NOW - timedelta(days=2), until, ["writer"]) == {
        "writer": (NOW - timedelta(days=0.5), None)
    }
