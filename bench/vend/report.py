"""The printed report: the table, the ratios, the targets, the broker's memory, the profile."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
from typing import Any

from bench.vend.measurement import Summary
from bench.vend.processes import Broker
from bench.vend.profile import PROFILE_RATE, summarize_profile
from bench.vend.run import ISSUER, RAW
from bench.vend.seeding import ACCESS, BUCKET, SECRET_CACHE_SECONDS, SPACE_PREFIX, TTL_SECONDS
from support.rgw_server import RgwServer

LATENCY_TARGET_MS = 1.0  # broker p50 <= raw p50 + 1.0 ms (sequential, c=1)
THROUGHPUT_TARGET = 0.7  # broker req/s >= 0.7 x raw req/s at c=32
LATENCY_TARGET_CONCURRENCY = 1
THROUGHPUT_TARGET_CONCURRENCY = 32
# The hot-path targets against the lean baseline (in-process StsIssuer, no HTTP front).
LEAN_LATENCY_MS = 0.5  # broker p50 <= issuer p50 + 0.5 ms at c=1
LEAN_THROUGHPUT = 0.8  # broker req/s >= 0.8 x issuer req/s at c=32, one process
LEAN_P99 = 2.0  # broker p99 <= 2 x issuer p99 at c=32
WORKERS_SCALING = 1.6  # 2 workers >= 1.6 x one worker's req/s at c=32
DISTURBED_SHARE = 0.10  # warn when other processes took more of the machine's CPU than this
KIB_PER_MIB = 1024.0


def _fmt_cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / KIB_PER_MIB:.1f} MiB"


def report(
    summaries: list[Summary],
    brokers: list[Broker],
    extra: dict[str, Any],
    server: RgwServer,
    args: argparse.Namespace,
) -> bool:
    """Print the tables; True if no request failed."""
    load = os.getloadavg()
    print()
    print(
        f"credbroker vend benchmark: {args.requests} timed requests per measurement after "
        f"{args.warmup} warm-up, {args.rounds} round(s) each (medians of rounds), loopback only"
    )
    print(
        f"  RGW {server.endpoint} ({'started here' if server.owned else 'reused'}), "
        f"role {server.vend_role_arn}, DurationSeconds {TTL_SECONDS}, "
        f"session policy {extra['policy_chars']} chars ({ACCESS.value} {BUCKET}/{SPACE_PREFIX})"
    )
    print(
        f"  broker: `credbroker serve`, embedded sealed store, secret cache "
        f"{SECRET_CACHE_SECONDS:g} s, audit to a JSONL file; "
        + ", ".join(f"{b.label} pid {b.pid}" for b in brokers)
    )
    print(
        f"  machine: {os.cpu_count()} CPUs shared by the load generator, the broker and RGW "
        f"(load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})"
    )
    print()
    header = (
        f"{'conc':>4}  {'target':<22} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>6} "
        f"{'(min-max)':>11} {'err':>4}  {'cpu us/req: gen':>15} {'broker':>6} {'rgw':>5}"
        f"  {'other cpu':>9}"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for r in summaries:
        failed = sum(r.errors.values())
        ok = ok and failed == 0
        low, high = r.throughput_range
        print(
            f"{r.concurrency:>4}  {r.target:<22} {r.p50:>7.2f} {r.p99:>7.2f} "
            f"{r.throughput:>6.0f} {f'({low:.0f}-{high:.0f})':>11} {failed:>4}  "
            f"{_fmt_cpu(r.cpu_us_per_request('generator')):>15} "
            f"{_fmt_cpu(r.cpu_us_per_request('broker')):>6} "
            f"{_fmt_cpu(r.cpu_us_per_request('rgw')):>5}"
            f"  {100 * r.other_cpu_share:>8.0f}%"
        )
    for r in summaries:
        for message, n in r.errors.most_common(3):
            print(f"  ! {r.target} c={r.concurrency}: {n} x {message}")
    print(
        "  cpu us/req: CPU time per request of the load generator (this process), the broker "
        "process and RGW (radosgw+osd+mon);\n"
        "  other cpu: share of the machine's CPU used by processes not started here meanwhile."
    )
    disturbed = statistics.median(r.other_cpu_share for r in summaries)
    if disturbed > DISTURBED_SHARE:
        print(
            f"  WARNING: other processes used a median {100 * disturbed:.0f}% of the machine's "
            "CPU during the measurements: latencies and req/s are disturbed (cpu us/req less "
            "so); rerun on a quiet machine or with more --rounds."
        )

    print()
    print("ratios (broker against each baseline at the same concurrency)")
    by_key = {(r.target, r.concurrency): r for r in summaries}
    for broker in brokers:
        for c in args.concurrency:
            r = by_key[(broker.label, c)]
            for name in (RAW, ISSUER):
                base = by_key[(name, c)]
                print(
                    f"  c={c:<3} {broker.label:<17} vs {name:<22} "
                    f"p50 {r.p50 - base.p50:+6.2f} ms (x{r.p50 / base.p50:.2f}), "
                    f"p99 {r.p99 - base.p99:+6.2f} ms, "
                    f"throughput x{r.throughput / base.throughput:.2f}"
                )
    print()
    print(f"targets (against {RAW}, as the issue states them)")
    for broker in brokers:
        c = LATENCY_TARGET_CONCURRENCY
        if (broker.label, c) in by_key:
            mine, raw = by_key[(broker.label, c)], by_key[(RAW, c)]
            delta = mine.p50 - raw.p50
            verdict = "MET" if delta <= LATENCY_TARGET_MS else "MISSED"
            print(
                f"  {broker.label:<17} p50 at c={c}: {mine.p50:.2f} ms <= {raw.p50:.2f} + "
                f"{LATENCY_TARGET_MS:.1f} ms?  delta {delta:+.2f} ms  {verdict}"
            )
        else:
            print(f"  {broker.label:<17} p50 target: not measured (needs --concurrency {c})")
        c = THROUGHPUT_TARGET_CONCURRENCY
        if (broker.label, c) in by_key:
            mine, raw = by_key[(broker.label, c)], by_key[(RAW, c)]
            ratio = mine.throughput / raw.throughput
            verdict = "MET" if ratio >= THROUGHPUT_TARGET else "MISSED"
            print(
                f"  {broker.label:<17} throughput at c={c}: {mine.throughput:.0f} / "
                f"{raw.throughput:.0f} req/s = x{ratio:.2f} >= x{THROUGHPUT_TARGET}?  {verdict}"
            )
        else:
            print(f"  {broker.label:<17} throughput target: not measured (needs c={c})")
    _lean_targets(brokers, by_key)
    print()
    print("broker memory (VmRSS of the broker process, summed over its workers)")
    for broker in brokers:
        before, after = broker.rss_before_kib, broker.rss_after_kib
        growth = f"{(after - before) / KIB_PER_MIB:+.1f} MiB" if before and after else "n/a"
        print(
            f"  {broker.label:<17} before load {_mib(before)}, after load {_mib(after)} "
            f"({growth}), peak {_mib(extra.get(f'hwm:{broker.label}'))}"
        )
    profile = extra.get("profile")
    if profile:
        print()
        if "error" in profile:
            print(f"profile: {profile['error']}")
        else:
            print(
                f"profile of {brokers[0].label} (untimed extra run at c={max(args.concurrency)} "
                f"under py-spy, {PROFILE_RATE} Hz, blocking): {profile['requests']} requests at "
                f"{profile['throughput']:.0f} req/s, broker CPU "
                f"{profile['cpu_us_per_request']:.0f} us/request; stacks in {profile['file']}"
            )
            with contextlib.suppress(OSError):
                for line in summarize_profile(profile["file"]):
                    print("  " + line)
    return ok


def _lean_targets(brokers: list[Broker], by_key: dict[tuple[str, int], Summary]) -> None:
    low, high = LATENCY_TARGET_CONCURRENCY, THROUGHPUT_TARGET_CONCURRENCY
    print()
    print(f"targets against {ISSUER} (the lean baseline) and RGW's own CPU")
    for broker in brokers:
        name = broker.label
        if (name, low) in by_key:
            mine, lean = by_key[(name, low)], by_key[(ISSUER, low)]
            delta = mine.p50 - lean.p50
            print(
                f"  {name:<17} p50 at c={low}: {delta:+.2f} ms over the issuer "
                f"(<= +{LEAN_LATENCY_MS} ms?)  {_verdict(delta <= LEAN_LATENCY_MS)}"
            )
        if (name, high) in by_key:
            mine, lean = by_key[(name, high)], by_key[(ISSUER, high)]
            ratio = mine.throughput / lean.throughput
            if broker.workers == 1:
                print(
                    f"  {name:<17} throughput at c={high}: x{ratio:.2f} of the issuer "
                    f"(>= x{LEAN_THROUGHPUT}?)  {_verdict(ratio >= LEAN_THROUGHPUT)}"
                )
            p99 = mine.p99 / lean.p99
            print(
                f"  {name:<17} p99 at c={high}: x{p99:.2f} of the issuer's "
                f"(<= x{LEAN_P99}?)  {_verdict(p99 <= LEAN_P99)}"
            )
        for c in (low, high):
            if (name, c) not in by_key:
                continue
            cpu = by_key[(name, c)]
            broker_us, rgw_us = cpu.cpu_us_per_request("broker"), cpu.cpu_us_per_request("rgw")
            if broker_us is not None and rgw_us is not None:
                print(
                    f"  {name:<17} CPU per vend at c={c}: broker {broker_us:,.0f} us, RGW "
                    f"{rgw_us:,.0f} us (broker <= RGW?)  {_verdict(broker_us <= rgw_us)}"
                )
    single = [b for b in brokers if b.workers == 1]
    for broker in brokers:
        if broker.workers != 2 or not single or (broker.label, high) not in by_key:
            continue
        one = by_key[(single[0].label, high)]
        ratio = by_key[(broker.label, high)].throughput / one.throughput
        print(
            f"  {broker.label:<17} throughput at c={high}: x{ratio:.2f} of one worker "
            f"(>= x{WORKERS_SCALING}? only where the load generator and RGW have cores of "
            f"their own)  {_verdict(ratio >= WORKERS_SCALING)}"
        )


def _verdict(met: bool) -> str:
    return "MET" if met else "MISSED"
