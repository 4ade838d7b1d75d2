"""The vault goes away; reads keep working read-only, writes get 503, and it all heals by itself.

A real broker on each secret store that can go away, Vault KV v2 (the Vault double) and
CyberArk CCP (the CCP double over mTLS), and the real Ceph RGW: every test runs on both. The
read-only identity is the RGW's `credbroker-ro` user, whose role `credbroker-read` allows only
reads, so no session policy can make its keys write. Every vended key is used against RGW:
denials are observed. Numbers are printed (pytest -s shows them) and asserted against the
configured limits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import subprocess
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import botocore.exceptions
import pytest

from credbroker.secrets.sealing import load_key, new_key, unseal
from support.rgw_server import RgwServer
from tests.doubles.cyberark_ccp import CcpDouble, Pki
from tests.doubles.vault import VaultDouble
from tests.integration.conftest import (
    MAIN_BUCKET,
    VAULT_TOKEN,
    Harness,
    s3_client,
    start_broker,
    vault_store_config,
)

pytestmark = pytest.mark.rgw

TIMEOUT_S = 1.0  # secret_store_resilience.timeout_seconds: the whole secret-store call
OPEN_S = 2.0  # secret_store_resilience.open_seconds: one breaker interval
RESILIENCE = {
    "timeout_seconds": TIMEOUT_S,
    "attempts": 3,
    "backoff_seconds": 0.05,
    "backoff_max_seconds": 0.2,
    "failure_threshold": 2,
    "open_seconds": OPEN_S,
}
# What one request may take on top of the secret-store deadline: an STS call to a local RGW.
REQUEST_MARGIN_S = 0.5
OBJECT = "ENG/fallback/report.txt"


def fallback_config(rgw: RgwServer, state: Path, **options: Any) -> dict[str, Any]:
    key_file = state / "fallback.key"
    if not key_file.exists():
        key_file.write_text(new_key())
        key_file.chmod(0o600)
    return {
        "credentials_path": "credbroker/object-store/read-only",
        "role_arn": rgw.read_role_arn,
        "cache_file": str(state / "fallback.sealed"),
        "key_env": "CREDBROKER_TEST_UNSET_KEY",
        "key_file": str(key_file),
        "refresh_seconds": 1,
        "max_staleness_seconds": 3600,
        **options,
    }


@dataclass
class Upstream:
    """The secret store's server, one of two doubles, driven the same way: stopped
    (connection refused), hanging, answering 5xx (Vault sealed: 503; CCP: IIS's 500), and
    refusing the broker (Vault: token revoked; CCP: the AppID no longer accepts its client
    certificate, 403 APPAP306E)."""

    kind: str
    double: VaultDouble | CcpDouble

    async def stop(self) -> None:
        await self.double.stop()

    async def start(self) -> None:
        await self.double.start()

    def hang(self, seconds: float) -> None:
        self.double.hang(seconds)

    def answer_5xx(self, failing: bool) -> None:
        if isinstance(self.double, VaultDouble):
            if failing:
                self.double.seal()
            else:
                self.double.unseal()
        else:
            self.double.fail_all(500 if failing else None)

    def refuse_the_broker(self) -> None:
        if isinstance(self.double, VaultDouble):
            self.double.revoke(VAULT_TOKEN)
        else:
            # The AppID now accepts another certificate only (re-issued, rotated, ...).
            self.double.applications["credbroker"].certificates = {"0" * 64}

    @property
    def logged_as(self) -> tuple[str, ...]:
        """How a failed read is logged: by the adapter, or (a CCP call cut short by the
        wrapper's deadline before its own timeout) by the resilient wrapper."""
        if self.kind == "vault":
            return ("vault read of",)
        return ("cyberark-ccp read of", "secret store read of")


def start(
    rgw: RgwServer, state: Path, upstream: Upstream, **fallback: Any
) -> AsyncGenerator[Harness, None]:
    """start_broker on the double, with the resilience and fallback settings above."""
    options: dict[str, Any] = {
        "secret_store_resilience": RESILIENCE,
        "fallback": fallback_config(rgw, state, **fallback),
    }
    if isinstance(upstream.double, VaultDouble):
        # Per HTTP request inside hvac; the wrapper's 1 s deadline over the whole call is
        # shorter.
        vault = upstream.double
        return start_broker(
            rgw,
            state,
            vault=vault,
            secret_store=vault_store_config(vault, state, timeout_seconds=3),
            **options,
        )
    return start_broker(rgw, state, ccp=upstream.double, **options)


async def wait_for(predicate: Callable[[], bool], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds}s")
        await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def seeded(rgw: RgwServer, buckets: tuple[str, str]) -> Iterator[None]:
    """OBJECT exists during each test; everything under ENG/fallback/ is gone after it (the
    buckets are shared with test_vend_api.py, which lists ENG/)."""
    admin = s3_client(rgw, rgw.admin_access_key, rgw.admin_secret_key)
    admin.put_object(Bucket=MAIN_BUCKET, Key=OBJECT, Body=b"quarterly numbers")
    try:
        yield
    finally:
        listed = admin.list_objects_v2(Bucket=MAIN_BUCKET, Prefix="ENG/fallback/")
        for item in listed.get("Contents", []):
            admin.delete_object(Bucket=MAIN_BUCKET, Key=item["Key"])


@pytest.fixture(params=["vault", "ccp"])
async def upstream(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Upstream]:
    if request.param == "vault":
        async with VaultDouble() as vault:
            yield Upstream("vault", vault)
    else:
        async with CcpDouble(Pki(tmp_path / "pki")) as ccp:
            yield Upstream("ccp", ccp)


@pytest.fixture
async def broker(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path, upstream: Upstream
) -> AsyncIterator[Harness]:
    """Overrides conftest's embedded-store broker: this one runs on the upstream's double."""
    async for harness in start(rgw, tmp_path, upstream):
        # The background refresh has sealed the read-only key once before anything breaks.
        await wait_for(
            (tmp_path / "fallback.sealed").exists, seconds=5, what="first fallback refresh"
        )
        yield harness


# --- driving the broker -----------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    status: int
    body: dict[str, Any]
    seconds: float
    retry_after: str | None


async def call(harness: Harness, kind: str) -> Outcome:
    who = "eng-writer"
    if kind in ("read", "write"):
        path, body = "/v1/credentials", {"space": "ENG", "access": kind, "reason": "outage test"}
    else:
        method = "GET" if kind == "presign-get" else "PUT"
        key = "fallback/report.txt" if method == "GET" else "fallback/new.txt"
        path, body = "/v1/presign", {"space": "ENG", "key": key, "method": method}
    started = time.monotonic()
    response = await harness.client.post(
        path, json=body, headers={"Authorization": f"Bearer {harness.tokens[who]}"}
    )
    payload = await response.json()
    seconds = time.monotonic() - started
    return Outcome(kind, response.status, payload, seconds, response.headers.get("Retry-After"))


async def get_json(harness: Harness, path: str) -> tuple[int, dict[str, Any]]:
    response = await harness.client.get(path)
    return response.status, await response.json()


async def metric(harness: Harness, name: str) -> float:
    text = await (await harness.client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not found")


async def breaker_state(harness: Harness) -> str:
    text = await (await harness.client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith("credbroker_secret_store_breaker{") and line.endswith(" 1.0"):
            return line.split('="', 1)[1].split('"', 1)[0]
    raise AssertionError("no breaker state metric")


def put_object_error(harness: Harness, vended: dict[str, Any]) -> str:
    s3 = harness.s3_for(vended)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        s3.put_object(Bucket=MAIN_BUCKET, Key="ENG/fallback/evil.txt", Body=b"x")
    return str(info.value.response["Error"]["Code"])


# --- the outages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    name: str
    begin: Callable[[Upstream], Awaitable[None]]
    end: Callable[[Upstream], Awaitable[None]]


async def _stop(upstream: Upstream) -> None:
    await upstream.stop()


async def _start(upstream: Upstream) -> None:
    await upstream.start()


async def _fail(upstream: Upstream) -> None:
    upstream.answer_5xx(True)


async def _heal(upstream: Upstream) -> None:
    upstream.answer_5xx(False)


async def _hang(upstream: Upstream) -> None:
    upstream.hang(30)  # far past the 1 s deadline


async def _answer(upstream: Upstream) -> None:
    upstream.hang(0)


OUTAGES = [
    Outage("stopped", _stop, _start),
    Outage("sealed-503-or-500", _fail, _heal),
    Outage("hanging", _hang, _answer),
]


@pytest.mark.parametrize("outage", OUTAGES, ids=[o.name for o in OUTAGES])
async def test_an_outage_serves_reads_read_only_refuses_writes_and_heals_by_itself(
    broker: Harness, upstream: Upstream, outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = await call(broker, "write")
    assert (before.status, before.body["mode"]) == (201, "normal"), before.body

    await outage.begin(upstream)
    outcomes: list[Outcome] = []
    kinds = ["read", "write", "presign-get", "presign-put", "read"]
    for _ in range(3):  # sequential rounds; the first ones meet a closed breaker
        for kind in kinds:
            outcomes.append(await call(broker, kind))
    for _ in range(2):  # and concurrent bursts
        outcomes += await asyncio.gather(*(call(broker, kind) for kind in kinds * 2))

    # Reads: 201 in read-only mode, and the key cannot write (RGW says so).
    reads = [o for o in outcomes if o.kind == "read"]
    for o in reads:
        assert (o.status, o.body.get("mode")) == (201, "read-only"), o.body
    vended = reads[-1].body
    got = broker.s3_for(vended).get_object(Bucket=MAIN_BUCKET, Key=OBJECT)["Body"].read()
    assert got == b"quarterly numbers"
    assert put_object_error(broker, vended) == "AccessDenied"
    presigned = [o for o in outcomes if o.kind == "presign-get"]
    assert all(o.status == 201 and o.body["mode"] == "read-only" for o in presigned)
    async with aiohttp.ClientSession() as http, http.get(presigned[-1].body["url"]) as r:
        assert (r.status, await r.read()) == (200, b"quarterly numbers")

    # Writes: 503 vault_unavailable with Retry-After, nothing else.
    for o in outcomes:
        if o.kind in ("write", "presign-put"):
            assert o.status == 503, o.body
            assert o.body["error"]["code"] == "vault_unavailable"
            assert "write access needs the secret store" in o.body["error"]["message"]
            # Retry-After is the breaker's next try (whole seconds), never past its interval.
            assert o.retry_after is not None and 1 <= int(o.retry_after) <= math.ceil(OPEN_S)
    # No other 5xx, and nothing waited past the configured deadline.
    assert {o.status for o in outcomes} <= {201, 503}
    slowest = max(o.seconds for o in outcomes)
    assert slowest <= TIMEOUT_S + REQUEST_MARGIN_S, slowest

    # Degraded, not down: /readyz 200 "degraded", the metric says 1, the breaker is open.
    status, ready = await get_json(broker, "/readyz")
    assert (status, ready["status"]) == (200, "degraded"), ready
    assert "secret store unreachable" in ready["reason"]
    assert ready["checks"]["read_only_fallback"]["ok"] is True
    assert await metric(broker, "credbroker_degraded") == 1
    assert await breaker_state(broker) in ("open", "half_open")

    # The vault answers again: writes resume within one breaker interval, without a restart.
    await outage.end(upstream)
    back = time.monotonic()
    while (resumed := await call(broker, "write")).status != 201:
        assert resumed.body["error"]["code"] == "vault_unavailable"
        assert time.monotonic() - back < 3 * OPEN_S, "writes did not resume"
        await asyncio.sleep(0.05)
    recovery = time.monotonic() - back
    assert resumed.body["mode"] == "normal"
    assert put_object_error(broker, (await call(broker, "read")).body) == "AccessDenied"
    assert (await call(broker, "read")).body["mode"] == "normal"
    status, ready = await get_json(broker, "/readyz")
    assert (status, ready["status"]) == (200, "ready"), ready
    assert await metric(broker, "credbroker_degraded") == 0
    assert await breaker_state(broker) == "closed"
    # A trial call that was already waiting on a hanging vault when it came back fails at the
    # deadline and reopens the breaker once more: that case gets the deadline on top.
    bound = OPEN_S + REQUEST_MARGIN_S + (TIMEOUT_S if outage.name == "hanging" else 0)
    assert recovery <= bound, recovery

    # One log line on entering degraded mode and one on leaving it.
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("entering degraded mode") for m in messages) == 1
    assert sum(m.startswith("leaving degraded mode") for m in messages) == 1

    # No secret in logs, error bodies or the audit trail.
    audit = broker.audit_path.read_text()
    records = [json.loads(line) for line in audit.splitlines()]
    granted = [r for r in records if r["event"] in ("vend", "presign")]
    assert {r["mode"] for r in granted} == {"normal", "read-only"}
    assert sum(r["mode"] == "read-only" for r in granted) == len(reads) + len(presigned)
    assert all(r["access"] == "read" for r in granted if r["mode"] == "read-only")
    secrets = [
        broker.rgw.readonly_secret_key,
        broker.rgw.broker_secret_key,
        VAULT_TOKEN,
        *broker.tokens.values(),
        *(o.body["secretAccessKey"] for o in reads),
        *(o.body["sessionToken"] for o in reads),
    ]
    errors = json.dumps([o.body for o in outcomes if o.status != 201])
    # botocore is left out: this test's own S3 clients log their signed headers at DEBUG.
    logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("botocore"))
    # The outage itself was logged, by status and path only.
    assert any(logged in logs for logged in upstream.logged_as)
    for secret in secrets:
        assert secret not in logs
        assert secret not in audit
        assert secret not in errors
    print(
        f"\n[{outage.name}] {len(outcomes)} requests during the outage: statuses "
        f"{sorted({o.status for o in outcomes})}, slowest {slowest:.3f}s "
        f"(deadline {TIMEOUT_S}s); reads p50 "
        f"{sorted(o.seconds for o in reads)[len(reads) // 2]:.3f}s; "
        f"writes resumed {recovery:.3f}s after the vault came back (breaker interval {OPEN_S}s)"
    )


async def test_healthz_stays_fast_while_vends_wait_on_a_hanging_vault(
    broker: Harness, upstream: Upstream
) -> None:
    upstream.hang(30)
    vends = [asyncio.create_task(call(broker, kind)) for kind in ("read", "write") * 3]
    await asyncio.sleep(0.1)
    assert not any(task.done() for task in vends)  # they are waiting on the vault

    timings = []
    answered_while_waiting = 0
    for _ in range(20):
        started = time.monotonic()
        status, body = await get_json(broker, "/healthz")
        timings.append(time.monotonic() - started)
        assert (status, body) == (200, {"status": "ok"})
        if not any(task.done() for task in vends):
            answered_while_waiting += 1
    waited = [o.seconds for o in await asyncio.gather(*vends)]

    # Not a timing bound (the machine may be loaded): health answers come while every vend is
    # still held by the hanging vault, so nothing on the health path waits on it.
    assert answered_while_waiting >= 5, (answered_while_waiting, timings)
    assert max(waited) <= TIMEOUT_S + REQUEST_MARGIN_S
    print(
        f"\n[hanging] healthz x20 while 6 vends waited on the vault: max {max(timings) * 1000:.1f}"
        f" ms, median {sorted(timings)[10] * 1000:.1f} ms; the vends took "
        f"{min(waited):.3f}-{max(waited):.3f}s"
    )


async def test_the_read_only_key_cannot_write_even_under_a_write_policy(
    broker: Harness, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: even if a bug built a write policy for a read, the fallback identity's
    own role (reads only) stops it. The same sabotage with the service key does write."""
    import credbroker.vend as vend_module
    from credbroker.domain import Access, Scope
    from credbroker.policy import session_policy as real  # the function vend.py imported

    def write_policy(scope: Scope, **kw: Any) -> dict[str, Any]:
        return real(Scope(scope.bucket, scope.prefix, Access.WRITE), **kw)

    monkeypatch.setattr(vend_module, "session_policy", write_policy)
    normal = (await call(broker, "read")).body
    assert normal["mode"] == "normal"
    broker.s3_for(normal).put_object(Bucket=MAIN_BUCKET, Key="ENG/fallback/ok.txt", Body=b"x")

    await upstream.stop()
    degraded = (await call(broker, "read")).body
    assert degraded["mode"] == "read-only"
    assert put_object_error(broker, degraded) == "AccessDenied"


async def test_vault_permission_denied_is_a_config_error_and_never_falls_back(
    broker: Harness, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.refuse_the_broker()
    for kind in ("read", "write", "read", "presign-get"):
        outcome = await call(broker, kind)
        assert outcome.status == 502, outcome.body
        assert outcome.body["error"]["code"] == "vault_permission_denied"
    status, ready = await get_json(broker, "/readyz")
    assert (status, ready["status"]) == (503, "not_ready")
    assert ready["checks"]["secret_store"]["code"] == "vault_permission_denied"
    assert await breaker_state(broker) == "closed"
    assert await metric(broker, "credbroker_degraded") == 0
    assert "entering degraded mode" not in caplog.text


async def test_a_broker_restarted_during_the_outage_serves_reads_from_the_sealed_cache(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path, upstream: Upstream
) -> None:
    max_staleness = 5.0
    cache = tmp_path / "fallback.sealed"

    first = start(rgw, tmp_path, upstream, max_staleness_seconds=max_staleness)
    harness = await anext(first)
    await wait_for(cache.exists, seconds=5, what="first fallback refresh")
    await upstream.stop()
    await first.aclose()

    # The sealed file holds no key in plain text: grep finds neither the id nor the secret.
    for plain in (rgw.readonly_access_key, rgw.readonly_secret_key, rgw.broker_secret_key):
        grep = subprocess.run(["grep", "-c", "-F", plain, str(cache)], capture_output=True)
        assert grep.returncode == 1 and grep.stdout.strip() == b"0", plain
        assert plain.encode() not in cache.read_bytes()
    assert json.loads(cache.read_bytes())["format"] == "credbroker-sealed-v1/read-only-fallback"
    key = load_key(key_file=tmp_path / "fallback.key")
    sealed = json.loads(unseal(key, cache.read_bytes(), purpose="read-only-fallback"))
    fetched_at = datetime.fromisoformat(sealed["fetched_at"]).timestamp()

    second = start(rgw, tmp_path, upstream, max_staleness_seconds=max_staleness)
    harness = await anext(second)  # starts, with the vault down, without waiting for it
    try:
        read = await call(harness, "read")
        assert (read.status, read.body["mode"]) == (201, "read-only"), read.body
        age_served = time.time() - fetched_at
        assert put_object_error(harness, read.body) == "AccessDenied"
        s3 = harness.s3_for(read.body)
        assert s3.get_object(Bucket=MAIN_BUCKET, Key=OBJECT)["Body"].read() == b"quarterly numbers"
        write = await call(harness, "write")
        assert (write.status, write.body["error"]["code"]) == (503, "vault_unavailable")
        status, ready = await get_json(harness, "/readyz")
        assert (status, ready["status"]) == (200, "degraded"), ready

        # Past the maximum staleness, reads are refused too.
        await asyncio.sleep(max(0.0, fetched_at + max_staleness + 0.2 - time.time()))
        refused = await call(harness, "read")
        age_refused = time.time() - fetched_at
        assert refused.status == 503, refused.body
        assert refused.body["error"]["code"] == "vault_unavailable"
        assert "maximum staleness" in refused.body["error"]["message"]
        assert refused.seconds <= TIMEOUT_S + REQUEST_MARGIN_S
        status, ready = await get_json(harness, "/readyz")
        assert (status, ready["status"]) == (503, "not_ready"), ready
        assert ready["checks"]["read_only_fallback"]["ok"] is False
    finally:
        await second.aclose()
    print(
        f"\n[restart] served a read-only key from the sealed cache at age {age_served:.2f}s; "
        f"refused at age {age_refused:.2f}s (max staleness {max_staleness:g}s)"
    )
