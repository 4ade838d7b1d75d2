"""The flags and main(): start the RGW and the brokers, run, report, and always stop them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import bench.vend
from bench.vend.processes import (
    Broker,
    loaded_uvloop,
    raise_interrupt,
    start_broker,
    stop_process,
    stop_rgw_dir,
    wait_healthy,
)
from bench.vend.report import report
from bench.vend.run import run_benchmark
from bench.vend.seeding import seed
from support.rgw_server import free_ports, server_from_env_file, start_rgw


def _concurrency_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers") from None
    if not values or any(v < 1 or v > 256 for v in values):
        raise argparse.ArgumentTypeError("each concurrency must be 1..256")
    return values


def _loops(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or any(v not in ("asyncio", "uvloop") for v in values):
        raise argparse.ArgumentTypeError("asyncio, uvloop or asyncio,uvloop")
    return list(dict.fromkeys(values))


def _workers(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("e.g. 1 or 1,2") from None
    if not values or any(not 1 <= v <= 16 for v in values):
        raise argparse.ArgumentTypeError("worker counts 1..16, e.g. 1,2")
    return list(dict.fromkeys(values))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="vend_bench",
        description=bench.vend.__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--requests", type=int, default=2000, help="timed requests per measurement")
    p.add_argument("--warmup", type=int, default=200, help="untimed requests before each")
    p.add_argument(
        "--concurrency", type=_concurrency_list, default=[1, 32], help="e.g. 1,32 (default)"
    )
    p.add_argument(
        "--reuse-rgw",
        type=Path,
        metavar="ENVFILE",
        help="the env file of a running RGW (scripts/rgw-dev.sh up DIR -> DIR/env); "
        "it is left running",
    )
    p.add_argument(
        "--broker-loop",
        type=_loops,
        default=["asyncio"],
        help="event loop(s) of the broker process: asyncio (default), uvloop, or both",
    )
    p.add_argument(
        "--broker-workers",
        type=_workers,
        default=[1],
        help="`serve --workers N` of the broker: 1 (default), or e.g. 1,2 for both",
    )
    p.add_argument(
        "--profile-broker",
        type=Path,
        metavar="FILE",
        help="after the timed runs, one untimed run at the top concurrency under py-spy; "
        "collapsed stacks to FILE and a summary printed",
    )
    p.add_argument(
        "--rounds", type=int, default=3, help="timed rounds per target and concurrency (3)"
    )
    p.add_argument(
        "--profile-requests", type=int, default=5000, help="requests in the profiled run (5000)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (config, logs, audit)")
    args = p.parse_args(argv)
    if not 1 <= args.requests <= 100_000 or not 0 <= args.warmup <= 100_000:
        p.error("--requests must be 1..100000 and --warmup 0..100000")
    if not 1 <= args.rounds <= 20 or not 1 <= args.profile_requests <= 100_000:
        p.error("--rounds must be 1..20 and --profile-requests 1..100000")
    if "uvloop" in args.broker_loop and args.broker_workers != [1]:
        p.error("--broker-loop uvloop runs one process (its workers would start on asyncio)")
    if "uvloop" in args.broker_loop and importlib.util.find_spec("uvloop") is None:
        p.error("--broker-loop uvloop: uvloop is not installed in this Python")
    return args


@contextlib.contextmanager
def _cleanup_on_exit() -> Iterator[contextlib.ExitStack]:
    """An ExitStack unwound with SIGINT and SIGTERM ignored: a second Ctrl-C cannot cut the
    clean-up short. SIGTERM to the benchmark is handled like Ctrl-C."""
    old_term = signal.signal(signal.SIGTERM, raise_interrupt)
    stack = contextlib.ExitStack()
    try:
        yield stack
    finally:
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.close()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with _cleanup_on_exit() as stack:
        try:
            state = Path(tempfile.mkdtemp(prefix="credbroker-bench-"))
            if args.keep:
                stack.callback(print, f"kept {state}", file=sys.stderr)
            else:
                stack.callback(shutil.rmtree, state, ignore_errors=True)

            if args.reuse_rgw:
                server = server_from_env_file(args.reuse_rgw, owned=False)
                print(f"reusing RGW {server.endpoint} from {args.reuse_rgw}", file=sys.stderr)
            else:
                rgw_dir = state / "rgw"
                stack.callback(stop_rgw_dir, rgw_dir)  # registered before `up`: Ctrl-C included
                rgw_port, mon_port = free_ports(2)
                print(f"starting RGW on 127.0.0.1:{rgw_port} ...", file=sys.stderr)
                server = start_rgw(rgw_dir, rgw_port, mon_port)
                print(f"RGW up in {server.boot_seconds:.1f} s", file=sys.stderr)

            config_path, token = seed(server, state)
            brokers: list[Broker] = []
            for loop, workers in [(lp, w) for lp in args.broker_loop for w in args.broker_workers]:
                label = "broker" if args.broker_loop == ["asyncio"] else f"broker ({loop})"
                if args.broker_workers != [1]:
                    label += f" x{workers}"
                broker = start_broker(state, config_path, loop, label, workers)
                stack.callback(stop_process, broker.proc)
                brokers.append(broker)
            for broker in brokers:
                wait_healthy(broker)
                if broker.loop == "uvloop" and not loaded_uvloop(broker.pid):
                    raise RuntimeError("the uvloop broker did not load uvloop")
            print(
                "brokers up: " + ", ".join(f"{b.label} :{b.port}" for b in brokers),
                file=sys.stderr,
            )

            summaries, extra = asyncio.run(run_benchmark(server, brokers, token, args))
            for broker in brokers:
                if broker.proc.poll() is not None:
                    raise RuntimeError(f"{broker.label} died:\n{broker.log_tail()}")
            ok = report(summaries, brokers, extra, server, args)
            return 0 if ok else 1
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("\ninterrupted: stopping what was started", file=sys.stderr)
            return 130
        except Exception as exc:
            print(f"vend_bench: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
