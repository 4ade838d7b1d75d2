"""Per-vend cost of the chained audit record against the plain one, measured in the same run.

    .venv/bin/python -m bench.audit_bench [--records 20000] [--rounds 5]

Each round writes `--records` vend-shaped records (the fields vend.py writes, through the
request-context wrapper the server uses) to a fresh file on the same disk, once through the
plain JSON-lines sink (audit.chain: false) and once through the chain (seq, prev hash, and a
signed Ed25519 checkpoint every 1000 records: far more often than the 300 s default). The
order alternates per round. It prints p50/p99/mean per record and the chained-minus-plain
difference at p50 (target: under 0.1 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credbroker.audit.chain import ChainedAudit
from credbroker.audit.context import SOURCE, RequestAudit
from credbroker.audit.jsonl import JsonLinesAudit
from credbroker.ports import AuditSink


def vend_record() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "ts": now.isoformat(),
        "event": "vend",
        "lease_id": "cb-" + secrets.token_hex(12),
        "client": "nightly-export",
        "bucket": "confluence-exports",
        "prefix": "ENG/reports/",
        "access": "read",
        "ttl_seconds": 900,
        "expires": (now + timedelta(seconds=900)).isoformat(),
        "reason": "nightly export",
        "rule": "export-pages",
        "actor": "557058:f0e1",
        "mode": "read-only",
        "access_key_id": "X7" + secrets.token_hex(9).upper(),
    }


async def measure(sink: AuditSink, chained: ChainedAudit | None, records: int) -> list[float]:
    SOURCE.set("127.0.0.1")
    samples = []
    for n in range(records):
        event = vend_record()
        started = time.perf_counter()
        await sink.record(event)
        if chained is not None and n % 1000 == 999:
            await chained.checkpoint()  # counted in this record's time
        samples.append(time.perf_counter() - started)
    await sink.close()
    return samples


def describe(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] * 1e6
    p99 = ordered[int(len(ordered) * 0.99)] * 1e6
    return p50, p99, statistics.fmean(samples) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    key = Ed25519PrivateKey.generate()
    plain_all: list[float] = []
    chained_all: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = ["plain", "chained"] if round_ % 2 == 0 else ["chained", "plain"]
            for kind in order:
                path = Path(tmp) / f"{kind}-{round_}.jsonl"
                if kind == "plain":
                    plain_all += await measure(
                        RequestAudit(JsonLinesAudit(path)), None, args.records
                    )
                else:
                    chained = ChainedAudit(
                        [JsonLinesAudit(path)], signer=key, checkpoint_seconds=None
                    )
                    chained_all += await measure(RequestAudit(chained), chained, args.records)
    print(f"{args.rounds} rounds x {args.records} records each, per record (microseconds):")
    print(f"{'':10} {'p50':>8} {'p99':>8} {'mean':>8}")
    for name, samples in (("plain", plain_all), ("chained", chained_all)):
        p50, p99, mean = describe(samples)
        print(f"{name:10} {p50:8.1f} {p99:8.1f} {mean:8.1f}")
    extra = describe(chained_all)[0] - describe(plain_all)[0]
    verdict = "met" if extra < 100 else "NOT met"
    print(f"chained - plain at p50: {extra:.1f} us (target < 100 us: {verdict})")


if __name__ == "__main__":
    asyncio.run(main())
