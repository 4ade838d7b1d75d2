"""The per-vend cost of lease recording: the real vend path (Broker.vend: authorize, policy,
parent key, issue, audit, lease) in-process, with an issuer that answers at once (no network),
so the figures are what recording adds, not RGW's noise. Same run, same process, rotating
order, for each concurrency:

  no leases          Broker(leases=None): the path before leases existed
  batched (sqlite)   BatchedLeaseWriter over the SQLite state store (what `serve` runs)
  batched (postgres) BatchedLeaseWriter over PostgreSQL (several replicas)
  sync insert (...)  for comparison only: one INSERT awaited per vend, the round trip the
                     batched writer keeps off the hot path

    .venv/bin/python -m bench.lease_bench [--requests 3000] [--rounds 3] [--concurrency 1,32]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

Prints p50/p99 per vend (microseconds) and vends per second, and how many leases reached the
table (every one, after the final flush). The audit sink writes a real JSON-lines file.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from credbroker.audit.jsonl import JsonLinesAudit
from credbroker.domain import (
    Access,
    AccessKey,
    Client,
    Flavor,
    SecretVersion,
    SessionKey,
    SpaceTarget,
    TtlLimits,
)
from credbroker.leases import Lease, LeaseFilter
from credbroker.parent_key import ParentKeySource
from credbroker.state.lease_writer import BatchedLeaseWriter
from credbroker.state.postgres import PostgresStateStore
from credbroker.state.sqlite import SqliteStateStore
from credbroker.vend import Broker, VendRequest

CLIENT = Client("bench", frozenset({"ENG"}), Access.WRITE, 3600)
REQUEST = VendRequest(space="ENG", access=Access.READ)


class Store:
    kind = "bench"
    writable = False

    async def read(self, path: str) -> SecretVersion:
        return SecretVersion({"access_key_id": "AKBENCH", "secret_access_key": "x"}, 1)


class Issuer:
    endpoint = public_endpoint = "http://127.0.0.1:1"
    region = "default"

    def __init__(self) -> None:
        self.n = 0

    async def assume_role(self, parent: AccessKey, **kwargs: Any) -> SessionKey:
        self.n += 1
        return SessionKey(
            f"ASIA{self.n:016d}",
            "secret",
            "token",
            datetime.now(UTC) + timedelta(seconds=kwargs["duration_seconds"]),
        )

    def presign(self, *args: Any, **kwargs: Any) -> str:
        raise NotImplementedError

    async def check(self) -> None: ...

    async def close(self) -> None: ...


class Metrics:
    def count_parent_key_refresh(self) -> None: ...

    def set_degraded(self, degraded: bool) -> None: ...

    def count_frozen(self, action: str) -> None: ...


class SyncInsert:
    """One awaited INSERT per vend: the cost the batched writer keeps off the hot path."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._tasks: set[asyncio.Task[int]] = set()
        self.pending: list[Lease] = []

    def issued(self, lease: Lease) -> None:
        self.pending.append(lease)

    async def drain(self) -> None:
        batch, self.pending = self.pending, []
        for lease in batch:
            await self._log.add_leases([lease])


def broker(audit: JsonLinesAudit, sink: Any) -> Broker:
    return Broker(
        spaces={"ENG": SpaceTarget("cb-bench", "ENG/")},
        ttl=TtlLimits(900, 900, 3600),
        credentials=ParentKeySource(Store(), "p", cache_seconds=5),  # type: ignore[arg-type]
        issuer=Issuer(),
        audit=audit,
        metrics=Metrics(),
        flavor=Flavor.RGW,
        leases=sink,
    )


async def drive(
    call: Callable[[], Awaitable[None]], requests: int, concurrency: int
) -> dict[str, float]:
    latencies: list[float] = []
    queue = iter(range(requests))

    async def worker() -> None:
        for _ in queue:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99) - 1] * 1e6,
        "per_s": requests / wall,
    }


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cb-lease-bench-"))
    audit = JsonLinesAudit(tmp / "audit.jsonl")
    sqlite = await SqliteStateStore.open(tmp / "state.sqlite3")
    stores: dict[str, Any] = {"sqlite": sqlite}
    schema = f"cbbench_{uuid.uuid4().hex[:8]}"
    if args.postgres:
        stores["postgres"] = await PostgresStateStore.open(args.postgres, schema=schema)
    targets: dict[str, tuple[Any, Callable[[], Awaitable[None]]]] = {"no leases": (None, _noop)}
    writers: list[BatchedLeaseWriter] = []
    for name, store in stores.items():
        writer = BatchedLeaseWriter(store)
        writer.start()
        writers.append(writer)
        targets[f"batched ({name})"] = (writer, _noop)
        sync = SyncInsert(store)
        targets[f"sync insert ({name})"] = (sync, sync.drain)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    names = list(targets)
    for concurrency in args.concurrency:
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                sink, after = targets[name]
                subject = broker(audit, sink)

                async def vend(subject: Broker = subject, after: Any = after) -> None:
                    await subject.vend(CLIENT, REQUEST)
                    await after()

                # The synchronous comparison is ~1000x slower: a tenth of the requests.
                count = args.requests // 10 if name.startswith("sync") else args.requests
                await drive(vend, args.warmup // 10 or 1, concurrency)
                results.setdefault((name, concurrency), []).append(
                    await drive(vend, count, concurrency)
                )
    for writer in writers:
        await writer.close()
    print(
        f"{args.requests} vends (sync insert: {args.requests // 10}) x {args.rounds} rounds per "
        "target; medians of the rounds\n"
    )
    print(f"{'target':<26} {'c':>3} {'p50 us':>9} {'p99 us':>9} {'vends/s':>9} {'+p50 us':>8}")
    for concurrency in args.concurrency:
        base = statistics.median(r["p50_us"] for r in results[("no leases", concurrency)])
        for name in names:
            rounds = results[(name, concurrency)]
            p50 = statistics.median(r["p50_us"] for r in rounds)
            p99 = statistics.median(r["p99_us"] for r in rounds)
            rate = statistics.median(r["per_s"] for r in rounds)
            print(
                f"{name:<26} {concurrency:>3} {p50:>9.1f} {p99:>9.1f} {rate:>9.0f} "
                f"{p50 - base:>+8.1f}"
            )
    for name, store in stores.items():
        stored = len(await store.find(LeaseFilter(limit=10_000_000)))
        print(f"\nleases in the {name} table: {stored}")
    await sqlite.close()
    if "postgres" in stores:
        await stores["postgres"].close()
        connection = await asyncpg.connect(args.postgres)
        await connection.execute(f"DROP SCHEMA {schema} CASCADE")
        await connection.close()
    await audit.close()


async def _noop() -> None:
    return None


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32]
    )
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(_parse()))
