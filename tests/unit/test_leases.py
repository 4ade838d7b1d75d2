"""Leases and revocation on fakes: a lease per vend and per presign with the right fields and
never a secret; the batched writer (flush, retry, bound, shutdown) and the reconciliation from
the audit file; revocation selectors; the enforcer's denials and pruning."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from credbroker.audit import context as audit_context
from credbroker.audit.jsonl import JsonLinesAudit
from credbroker.audit.replay import unexpired_leases
from credbroker.domain import Access, Flavor
from credbroker.errors import (
    InvalidRequest,
    LeaseNotFound,
    NotAllowed,
    RevocationTooLarge,
    RotationBusy,
)
from credbroker.leases import (
    Denials,
    Lease,
    LeaseFilter,
    LeaseJobs,
    Revoker,
    Selector,
    Unenforced,
    lease_from_audit,
)
from credbroker.objectstore.rgw_revocation import MAX_POLICY_CHARS, deny_document
from credbroker.state.lease_writer import BatchedLeaseWriter
from credbroker.vend import Broker, PresignRequest, VendRequest
from tests.fake_leases import FakeEnforcer, MemoryLeaseLog
from tests.fakes import T0, Clock, FakeAudit
from tests.unit.test_vend import SPACES, TTL, WRITER, Rig


class Collected:
    """A LeaseSink that keeps what the vend path hands it."""

    def __init__(self) -> None:
        self.leases: list[Lease] = []

    def issued(self, lease: Lease) -> None:
        self.leases.append(lease)


def broker_with(rig: Rig, sink: Any) -> Broker:
    return Broker(
        spaces=SPACES,
        ttl=TTL,
        credentials=rig.credentials,
        issuer=rig.issuer,
        audit=rig.audit,
        metrics=rig.metrics,
        flavor=Flavor.RGW,
        leases=sink,
        clock=rig.clock,
    )


def no_secret_in(value: Any, rig: Rig) -> None:
    text = json.dumps(value, default=str)
    for key in rig.issuer.minted:
        assert key.secret_access_key not in text and key.session_token not in text


# --- the vend path hands every lease over -------------------------------------------------------


async def test_a_vend_hands_over_one_lease_with_every_field_and_no_secret() -> None:
    rig, sink = Rig(), Collected()
    broker = broker_with(rig, sink)
    vended = await broker.vend(
        WRITER,
        VendRequest(space="ENG", access=Access.READ, prefix="x", rule="r-1", actor="al@x.org"),
    )
    [lease] = sink.leases
    key = rig.issuer.minted[0]
    assert lease == Lease(
        lease_id=vended.lease_id,
        kind="vend",
        client="writer",
        space="ENG",
        bucket="cb-main",
        prefix="ENG/x/",
        access="read",
        ttl_seconds=TTL.default_seconds,
        issued_at=T0,
        expires_at=key.expiration,
        mode="normal",
        access_key_id=key.access_key_id,
        rule="r-1",
        actor="al@x.org",
    )
    assert lease.lease_id == rig.call.session_name  # the RoleSessionName RGW sees
    no_secret_in(lease.as_dict(T0), rig)


async def test_a_presign_hands_over_a_lease_naming_the_object() -> None:
    rig, sink = Rig(), Collected()
    got = await broker_with(rig, sink).presign(
        WRITER, PresignRequest(space="ENG", key="a/b.pdf", method="PUT")
    )
    [lease] = sink.leases
    assert (lease.kind, lease.lease_id, lease.object_key, lease.access) == (
        "presign",
        got.lease_id,
        "ENG/a/b.pdf",
        "write",
    )
    assert lease.expires_at == got.expires_at
    assert lease.access_key_id == rig.issuer.minted[0].access_key_id
    no_secret_in(lease.as_dict(T0), rig)


async def test_a_refused_vend_hands_over_no_lease() -> None:
    rig, sink = Rig(), Collected()
    with pytest.raises(NotAllowed):
        await broker_with(rig, sink).vend(WRITER, VendRequest(space="HR", access=Access.READ))
    assert sink.leases == []


async def test_the_audit_record_of_a_vend_describes_the_same_lease() -> None:
    """What makes a crash lossless: the synchronous audit record holds every lease field."""
    rig, sink = Rig(), Collected()
    await broker_with(rig, sink).vend(WRITER, VendRequest(space="ENG", access=Access.WRITE))
    await broker_with(rig, sink).presign(WRITER, PresignRequest(space="ENG", key="k", method="GET"))
    from_audit = [lease_from_audit(e) for e in rig.audit.events]
    assert from_audit == sink.leases


def test_a_record_that_is_no_lease_reads_as_none() -> None:
    assert lease_from_audit({"event": "denied", "client": "x"}) is None
    assert lease_from_audit({"event": "vend", "lease_id": "cb-1"}) is None
    assert lease_from_audit({"event": "vend", "lease_id": "../x", "ts": "x"}) is None


# --- the batched writer ------------------------------------------------------------------------


def some_lease(n: int, **changes: Any) -> Lease:
    base = Lease(
        lease_id=f"cb-{n:024x}",
        kind="vend",
        client="writer",
        space="ENG",
        bucket="cb-main",
        prefix="ENG/",
        access="read",
        ttl_seconds=900,
        issued_at=T0 + timedelta(seconds=n),
        expires_at=T0 + timedelta(seconds=900 + n),
        mode="normal",
        access_key_id=f"ASIA{n:08d}",
    )
    return replace(base, **changes)


async def test_issued_never_writes_and_flush_writes_the_batch() -> None:
    log = MemoryLeaseLog()
    writer = BatchedLeaseWriter(log, flush_seconds=60, batch_size=100)
    for n in range(5):
        writer.issued(some_lease(n))
    assert log.add_calls == 0 and writer.pending == 5
    await writer.flush()
    assert log.add_calls == 1 and len(log.leases) == 5 and writer.pending == 0


async def test_the_background_task_writes_within_the_interval() -> None:
    log = MemoryLeaseLog()
    writer = BatchedLeaseWriter(log, flush_seconds=0.01)
    writer.start()
    try:
        writer.issued(some_lease(1))
        for _ in range(200):
            if log.leases:
                break
            await asyncio.sleep(0.01)
        assert list(log.leases) == [some_lease(1).lease_id]
    finally:
        await writer.close()


async def test_a_full_batch_wakes_the_writer_at_once() -> None:
    log = MemoryLeaseLog()
    writer = BatchedLeaseWriter(log, flush_seconds=3600, batch_size=3)
    writer.start()
    try:
        for n in range(3):
            writer.issued(some_lease(n))
        for _ in range(200):
            if len(log.leases) == 3:
                break
            await asyncio.sleep(0.01)
        assert len(log.leases) == 3
    finally:
        await writer.close()


async def test_a_failed_write_keeps_the_batch_for_the_next_try() -> None:
    log = MemoryLeaseLog(fail_writes=1)
    writer = BatchedLeaseWriter(log, flush_seconds=60)
    writer.issued(some_lease(1))
    with pytest.raises(Exception, match="down"):
        await writer.flush()
    assert writer.pending == 1
    await writer.flush()
    assert list(log.leases) == [some_lease(1).lease_id]


async def test_close_flushes_what_is_pending() -> None:
    log = MemoryLeaseLog()
    writer = BatchedLeaseWriter(log, flush_seconds=3600)
    writer.start()
    writer.issued(some_lease(1))
    await writer.close()
    assert list(log.leases) == [some_lease(1).lease_id]


async def test_the_buffer_is_bounded_and_counts_what_it_drops() -> None:
    dropped: list[int] = []
    writer = BatchedLeaseWriter(MemoryLeaseLog(), max_pending=2, on_dropped=dropped.append)
    for n in range(3):
        writer.issued(some_lease(n))
    assert writer.pending == 2 and writer.dropped == 1 and dropped == [1]


async def test_the_callers_address_is_added_from_the_request() -> None:
    log = MemoryLeaseLog()
    writer = BatchedLeaseWriter(log)
    token = audit_context.SOURCE.set("192.0.2.9")
    try:
        writer.issued(some_lease(1))
    finally:
        audit_context.SOURCE.reset(token)
    await writer.flush()
    assert log.leases[some_lease(1).lease_id].source == "192.0.2.9"


async def test_a_crash_before_the_batch_loses_no_lease(tmp_path: Path) -> None:
    """The vend's audit record is on disk before the answer; the batch never reached the table
    (the process died). At the next start the writer restores the lease from the audit file."""
    path = tmp_path / "audit.jsonl"
    audit = JsonLinesAudit(path)
    rig = Rig()
    rig.audit = audit  # type: ignore[assignment]
    lost = BatchedLeaseWriter(MemoryLeaseLog(), flush_seconds=3600)
    vended = await broker_with(rig, lost).vend(WRITER, VendRequest(space="ENG", access=Access.READ))
    expired = await broker_with(rig, lost).presign(
        WRITER, PresignRequest(space="ENG", key="k", method="GET")
    )
    await audit.close()
    with path.open("a") as torn:
        torn.write('{"event":"vend","lease_id":"cb-')  # a line cut short by the crash
    # the process dies here: `lost` is never flushed

    table = MemoryLeaseLog()
    fresh = BatchedLeaseWriter(table)
    now = T0 + timedelta(seconds=120)
    restored = await fresh.reconcile(unexpired_leases(path, now))
    assert restored == 2
    assert table.leases[vended.lease_id] == lost_lease(lost, vended.lease_id)
    # Run again: nothing new, and an expired lease is not brought back.
    assert await fresh.reconcile(unexpired_leases(path, now)) == 0
    assert unexpired_leases(path, expired.expires_at + timedelta(days=1)) == []
    assert unexpired_leases(tmp_path / "missing.jsonl", now) == []


def lost_lease(writer: BatchedLeaseWriter, lease_id: str) -> Lease:
    return next(x for x in writer._pending if x.lease_id == lease_id)


# --- revocation ---------------------------------------------------------------------------------


class RevokeRig:
    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(60)
        self.log = MemoryLeaseLog()
        self.enforcer = FakeEnforcer()
        self.audit = FakeAudit()
        self.flushed = 0
        self.revoker = Revoker(
            leases=self.log,
            enforcer=self.enforcer,
            audit=self.audit,
            max_ttl_seconds=7200,
            flush=self._flush,
            clock=self.clock,
        )

    async def _flush(self) -> None:
        self.flushed += 1

    async def seed(self) -> None:
        await self.log.add_leases(
            [
                some_lease(1),
                some_lease(2, client="reader"),
                some_lease(3, space="OPS", prefix=""),
                some_lease(4, expires_at=T0 + timedelta(seconds=30)),  # already expired
            ]
        )


@pytest.fixture
async def rr() -> RevokeRig:
    rig = RevokeRig()
    await rig.seed()
    return rig


async def test_revoke_one_lease_denies_exactly_its_session_name(rr: RevokeRig) -> None:
    answer = await rr.revoker.revoke(Selector.LEASE, some_lease(1).lease_id, by="admin")
    assert [x.lease_id for x in answer.leases] == [some_lease(1).lease_id]
    assert answer.revocation.object_store_enforced is True
    assert rr.enforcer.applied == [Denials((some_lease(1).lease_id,), None)]
    assert rr.flushed == 1  # this process's pending leases are written first
    lease = rr.log.leases[some_lease(1).lease_id]
    assert lease.revoked_at == rr.clock() and lease.as_dict(rr.clock())["state"] == "revoked"
    [event] = rr.audit.named("revoked")
    assert event["leases"] == [some_lease(1).lease_id]
    assert event["access_key_ids"] == [some_lease(1).access_key_id]
    assert event["by"] == "admin" and event["object_store_enforced"] is True


async def test_revoke_by_client_and_by_space_take_only_active_matching_leases(
    rr: RevokeRig,
) -> None:
    by_client = await rr.revoker.revoke(Selector.CLIENT, "writer")
    assert sorted(x.lease_id[-1] for x in by_client.leases) == ["1", "3"]  # 4 has expired
    by_space = await rr.revoker.revoke(Selector.SPACE, "ENG")
    assert [x.lease_id[-1] for x in by_space.leases] == ["2"]  # 1 was revoked already
    # The denials always list every revoked, unexpired lease.
    assert rr.enforcer.applied[-1].session_names == tuple(
        sorted(some_lease(n).lease_id for n in (1, 2, 3))
    )


async def test_revoke_issued_before_denies_by_issue_time_until_the_longest_ttl(
    rr: RevokeRig,
) -> None:
    cut = T0 + timedelta(seconds=2, milliseconds=500)
    answer = await rr.revoker.revoke(Selector.ISSUED_BEFORE, cut.isoformat())
    assert sorted(x.lease_id[-1] for x in answer.leases) == ["1", "2"]
    assert rr.enforcer.applied[-1].issued_before == cut
    assert answer.revocation.enforce_until == cut + timedelta(seconds=7200)
    # It stays in effect for the pruning job's resync, and ends after the longest TTL.
    rr.clock.advance(3600)
    await rr.revoker.sync()
    assert rr.enforcer.applied[-1].issued_before == cut
    rr.clock.advance(7200)
    await rr.revoker.sync()
    assert rr.enforcer.applied[-1] == Denials((), None)


async def test_denied_session_names_drop_out_when_their_keys_expire(rr: RevokeRig) -> None:
    await rr.revoker.revoke(Selector.LEASE, some_lease(1).lease_id)
    rr.clock.advance(900)  # past lease 1's expiry
    await rr.revoker.sync()
    assert rr.enforcer.applied[-1] == Denials((), None)


@pytest.mark.parametrize(
    ("selector", "value", "code"),
    [
        (Selector.LEASE, "cb-xyz", "invalid_lease_id"),
        (Selector.LEASE, "cb-" + "0" * 24 + "'", "invalid_lease_id"),
        (Selector.CLIENT, "*", "invalid_client"),
        (Selector.CLIENT, "a b", "invalid_client"),
        (Selector.SPACE, "ENG/../x", "invalid_space"),
        (Selector.SPACE, "", "invalid_space"),
        (Selector.ISSUED_BEFORE, "yesterday", "invalid_time"),
        (Selector.ISSUED_BEFORE, "2026-11-30T06:00:00", "invalid_time"),  # no zone
        (Selector.ISSUED_BEFORE, "2999-01-01T00:00:00Z", "invalid_time"),  # the future
    ],
)
async def test_hostile_selectors_are_refused_before_anything_changes(
    rr: RevokeRig, selector: Selector, value: str, code: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await rr.revoker.revoke(selector, value)
    assert refused.value.code == code
    assert rr.enforcer.applied == [] and rr.log.revoked == [] and rr.audit.events == []


async def test_an_unknown_lease_is_404_and_an_ended_one_revokes_nothing(rr: RevokeRig) -> None:
    with pytest.raises(LeaseNotFound):
        await rr.revoker.revoke(Selector.LEASE, "cb-" + "f" * 24)
    answer = await rr.revoker.revoke(Selector.LEASE, some_lease(4).lease_id)  # expired
    assert answer.leases == [] and answer.revocation.lease_count == 0


async def test_too_many_denials_are_refused_before_anything_is_recorded(rr: RevokeRig) -> None:
    rr.enforcer.max_names = 1
    await rr.revoker.revoke(Selector.LEASE, some_lease(1).lease_id)
    with pytest.raises(RevocationTooLarge):
        await rr.revoker.revoke(Selector.LEASE, some_lease(2).lease_id)
    assert rr.log.leases[some_lease(2).lease_id].revoked_at is None
    assert len(rr.log.revoked) == 1


async def test_a_store_that_cannot_enforce_says_so_and_still_records() -> None:
    rig = RevokeRig()
    await rig.seed()
    revoker = Revoker(
        leases=rig.log,
        enforcer=Unenforced("MinIO offers nothing"),
        audit=rig.audit,
        max_ttl_seconds=7200,
        clock=rig.clock,
    )
    answer = await revoker.revoke(Selector.CLIENT, "reader")
    assert answer.as_dict()["objectStoreEnforced"] is False
    assert answer.as_dict()["detail"] == "MinIO offers nothing"
    assert rig.log.leases[some_lease(2).lease_id].revoked_at is not None
    assert rig.audit.named("revoked")[0]["object_store_enforced"] is False


# --- the RGW deny policy -------------------------------------------------------------------------


def test_the_deny_document_is_compact_and_names_sessions_and_issue_time() -> None:
    assert deny_document(Denials()) is None
    text = deny_document(Denials(("cb-" + "a" * 24,), T0))
    assert text is not None and " " not in text  # RGW 16 refuses policy text with whitespace
    statements = json.loads(text)["Statement"]
    assert statements[0]["Effect"] == "Deny"
    assert statements[0]["Condition"] == {"StringLike": {"aws:userid": ["*:cb-" + "a" * 24]}}
    assert statements[1]["Condition"] == {
        "DateLessThan": {"aws:TokenIssueTime": "2026-11-23T12:00:00Z"}
    }


def test_about_three_hundred_revoked_leases_fit_the_policy_limit() -> None:
    names = tuple(f"cb-{n:024x}" for n in range(300))
    text = deny_document(Denials(names, T0))
    assert text is not None and len(text) <= MAX_POLICY_CHARS
    more = tuple(f"cb-{n:024x}" for n in range(320))
    assert len(deny_document(Denials(more)) or "") > MAX_POLICY_CHARS


# --- the pruning job ---------------------------------------------------------------------------


class Lock:
    def __init__(self, busy: bool) -> None:
        self.busy = busy

    def lock(self, name: str) -> Any:
        outer = self

        class Held:
            async def __aenter__(self) -> None:
                if outer.busy:
                    raise RotationBusy(f"{name} held")

            async def __aexit__(self, *exc: object) -> None:
                return None

        return Held()


async def test_one_replica_prunes_and_resyncs_another_skips(rr: RevokeRig) -> None:
    await rr.revoker.revoke(Selector.LEASE, some_lease(1).lease_id)
    rr.clock.advance(86400 * 2)
    busy = LeaseJobs(rr.revoker, Lock(True), interval_seconds=60, keep_seconds=3600)  # type: ignore[arg-type]
    assert await busy.run_once() is False
    assert len(rr.log.leases) == 4
    free = LeaseJobs(rr.revoker, Lock(False), interval_seconds=60, keep_seconds=3600)  # type: ignore[arg-type]
    assert await free.run_once() is True
    assert rr.log.leases == {} and rr.log.revoked == []
    assert rr.enforcer.applied[-1] == Denials((), None)


def test_a_lease_filter_matches_as_the_stores_do() -> None:
    lease = some_lease(1)
    assert LeaseFilter(client="writer", space="ENG").matches(lease)
    assert not LeaseFilter(active_at=lease.expires_at).matches(lease)
    assert LeaseFilter(issued_before=lease.issued_at + timedelta(seconds=1)).matches(lease)


def test_as_dict_states_are_active_expired_revoked() -> None:
    lease = some_lease(1)
    assert lease.as_dict(T0)["state"] == "active"
    assert lease.as_dict(lease.expires_at)["state"] == "expired"
    assert replace(lease, revoked_at=T0).as_dict(T0)["state"] == "revoked"
    assert "secret" not in json.dumps(lease.as_dict(T0)).lower()


async def test_an_object_store_that_fails_leaves_the_revocation_for_the_next_sync(
    rr: RevokeRig,
) -> None:
    from credbroker.errors import ObjectStoreUnavailable

    rr.enforcer.fail = ObjectStoreUnavailable("rgw iam role policy: unreachable")
    answer = await rr.revoker.revoke(Selector.LEASE, some_lease(1).lease_id)
    assert answer.revocation.object_store_enforced is False
    assert "pruning job applies it again" in answer.revocation.detail
    assert rr.log.leases[some_lease(1).lease_id].revoked_at is not None
    assert len(rr.log.revoked) == 1
    rr.enforcer.fail = None
    enforcement = await rr.revoker.sync()  # the pruning job's run
    assert enforcement.enforced
    assert rr.enforcer.applied[-1].session_names == (some_lease(1).lease_id,)


async def test_a_revocation_takes_every_matching_lease_not_a_page() -> None:
    rig = RevokeRig()
    rig.enforcer.max_names = 5000
    await rig.log.add_leases([some_lease(n) for n in range(1, 1201)])
    answer = await rig.revoker.revoke(Selector.CLIENT, "writer")
    assert len(answer.leases) == 1200
