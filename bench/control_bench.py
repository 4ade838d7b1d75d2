"""The control plane's costs: `.venv/bin/python -m bench.control_bench [--principals 1,100,1000]`.

1. Per-vend cost of the principal lookup: `authenticate` of the snapshot (LiveTokenAuth, what
   `serve` runs) against the config-only TokenAuth it replaced, with N principals of two tokens
   each (config-only: N tokens), and the freeze check (`ControlPlane.frozen`) with 0 and 10
   active freezes. In process, no I/O: this is all the vend path pays for them.
2. Propagation: two control planes, each on its own connection pool to the real PostgreSQL of
   this machine (one schema, dropped after) and running its refresh loop, as two replicas do:
   one revokes a token (or sets a freeze), and the time until the other's snapshot no longer
   holds it is measured. Then the same on one SQLite file (polling only). Against the bound
   README "Principals and freeze" states: 2 s.

Prints figures; asserts nothing (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import asyncpg  # noqa: E402

from credbroker.callers.tokens import LiveTokenAuth, TokenAuth, new_token  # noqa: E402
from credbroker.control import ControlPlane  # noqa: E402
from credbroker.domain import Access, Client, Principal, TokenRecord  # noqa: E402
from credbroker.ports import PrincipalStore  # noqa: E402
from credbroker.state.control_postgres import PostgresControlStore  # noqa: E402
from credbroker.state.control_sqlite import SqliteControlStore  # noqa: E402

DSN = "postgresql://postgres@127.0.0.1:5432/test"
SPACES = {"ENG"}


class _NoAudit:
    async def record(self, event: object) -> None: ...

    async def close(self) -> None: ...


def _plane(store: PrincipalStore, poll: float) -> ControlPlane:
    return ControlPlane(
        store, seed=[], spaces=SPACES, audit=_NoAudit(), mint=new_token, poll_seconds=poll
    )


def _per_call_us(call: Callable[[], object], seconds: float = 0.5) -> float:
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            call()
        n += 100
    return (time.perf_counter() - started) / n * 1e6


async def lookup_cost(counts: list[int]) -> None:
    print("principal lookup per vend (in process, microseconds per call)")
    print(
        f"{'principals':>10} {'tokens':>7} {'config TokenAuth':>17} {'snapshot':>9} "
        f"{'frozen() 0':>11} {'frozen() 10':>12}"
    )
    for count in counts:
        with tempfile.TemporaryDirectory() as tmp:
            store = await SqliteControlStore.open(Path(tmp) / "s.sqlite3")
            plane = _plane(store, 1.0)
            header = ""
            pairs = []
            now = datetime.now(UTC)
            for i in range(count):  # straight into the store: one reload at the end
                client = Client(f"rule-{i}", frozenset(SPACES), Access.READ, 3600)
                await store.add_principal(Principal(client, created_at=now, updated_at=now))
                for n in range(2):
                    token, digest = new_token()
                    record = TokenRecord(f"tok_{i:08x}{n:08x}", client.id, digest, now)
                    await store.add_token(record, max_active=2, now=now)
                    pairs.append((digest, client))
                    header = f"Bearer {token}"  # the last one: every hash is compared anyway
            await plane.refresh(force=True)
            live = LiveTokenAuth(plane)
            config = TokenAuth(pairs[1::2])
            t_config = _per_call_us(partial(config.authenticate, header))
            t_live = _per_call_us(partial(live.authenticate, header))
            t_free = _per_call_us(partial(plane.frozen, "rule-0", "ENG"))
            for n in range(10):
                await plane.freeze("bench", reason=f"f{n}", client_id="rule-0" if n else None)
            await plane.unfreeze("bench")  # the global one: nine client freezes stay
            await plane.freeze("bench", reason="other space", space="ENG", client_id="rule-0")
            t_frozen = _per_call_us(partial(plane.frozen, f"rule-{count - 1}", "ENG"))
            await store.close()
        print(
            f"{count:>10} {len(pairs):>7} {t_config:>17.1f} {t_live:>9.1f} {t_free:>11.2f} "
            f"{t_frozen:>12.2f}"
        )


async def _propagation(
    label: str, open_store: Callable[[], Awaitable[PrincipalStore]], poll: float, rounds: int
) -> None:
    one_store, two_store = await open_store(), await open_store()
    one, two = _plane(one_store, poll), _plane(two_store, poll)
    await one.refresh(force=True)
    await two.refresh(force=True)
    runner = asyncio.create_task(two.run())
    try:
        await one.add_client("bench", "rule-p", spaces=["ENG"])
        took: list[float] = []
        for _ in range(rounds):
            token, record = await one.issue_token("bench", "rule-p")
            auth = LiveTokenAuth(two)
            while True:  # wait until the other holds it, then time the revocation
                try:
                    auth.authenticate(f"Bearer {token}")
                    break
                except Exception:
                    await asyncio.sleep(0.002)
            started = time.perf_counter()
            await one.revoke_token("bench", "rule-p", record.id)
            while True:
                try:
                    auth.authenticate(f"Bearer {token}")
                except Exception:
                    break
                await asyncio.sleep(0.002)
            took.append(time.perf_counter() - started)
        took.sort()
        p95 = took[int(len(took) * 0.95) - 1]
        print(
            f"  {label:<34} n={rounds:<3} p50 {statistics.median(took) * 1000:7.1f} ms  "
            f"p95 {p95 * 1000:7.1f} ms  max {took[-1] * 1000:7.1f} ms  (bound 2000 ms)"
        )
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await one_store.close()
        await two_store.close()


async def propagation(rounds: int) -> None:
    print("revoked token refused by the other replica (commit to snapshot)")
    schema = f"cbbench_{uuid.uuid4().hex[:10]}"
    try:
        await _propagation(
            "PostgreSQL NOTIFY + 1 s poll",
            lambda: PostgresControlStore.open(DSN, schema=schema),
            1.0,
            rounds,
        )
    finally:
        connection = await asyncpg.connect(DSN)
        await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await connection.close()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.sqlite3"
        await _propagation(
            "SQLite, 1 s poll (the default)", lambda: SqliteControlStore.open(path), 1.0, rounds
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--principals", default="1,100,1000")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    asyncio.run(lookup_cost([int(n) for n in args.principals.split(",")]))
    asyncio.run(propagation(args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
