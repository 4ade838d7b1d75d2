"""Benchmark: raw STS AssumeRole against the broker's POST /v1/credentials, in one run.

    .venv/bin/python -m bench.vend_bench [--requests 2000] [--warmup 200] [--concurrency 1,32]
                                         [--rounds 3] [--reuse-rgw DIR/env]
                                         [--broker-loop asyncio|uvloop|asyncio,uvloop]
                                         [--profile-broker FILE] [--keep]

Everything is on loopback and bounded: it starts its own Ceph RGW (scripts/rgw-dev.sh through
support/rgw_server.py) on free ports, or reuses one named by an env file; seeds an embedded sealed
store, a config and a client token in a temp dir (as scripts/dev_seed.py does); starts the real
broker as a separate process (`credbroker serve`); then, for each concurrency and round, measures

  raw     aiobotocore STS AssumeRole (the issue's baseline): one client, keep-alive pool, the
          broker's parent key, the same role ARN, DurationSeconds and compact session policy
          the broker builds (credbroker.policy), a fresh RoleSessionName per call;
  issuer  the same call through credbroker's own StsIssuer, in this process: the broker's STS
          step with no HTTP front, so broker minus issuer is what the front and vend path add;
  broker  POST /v1/credentials {"space": "ENG", "access": "read"} with an aiohttp keep-alive
          pool, 201 expected;

with the same request count, warm-up excluded. It prints p50/p99/throughput, the ratios and the
targets, CPU per request of each process, and the broker's RSS before and after the load.
Whatever it started is stopped on exit, error, Ctrl-C or SIGTERM. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/vend_bench.py` puts bench/ first, not the root
    sys.path.insert(0, str(REPO_ROOT))

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from aiobotocore.config import AioConfig  # noqa: E402
from aiobotocore.session import get_session  # noqa: E402

from credbroker.callers.tokens import new_token  # noqa: E402
from credbroker.domain import Access, Scope, ServiceCredentials  # noqa: E402
from credbroker.issuers.sts import StsIssuer  # noqa: E402
from credbroker.policy import render_policy, session_policy  # noqa: E402
from credbroker.secrets.sealing import new_key  # noqa: E402
from support.rgw_server import (  # noqa: E402
    SCRIPT,
    RgwServer,
    admin_s3,
    free_port,
    free_ports,
    server_from_env_file,
    start_rgw,
)

BUCKET = "cb-bench"
SPACE = "ENG"
SPACE_PREFIX = "ENG/"
ACCESS = Access.READ
TTL_SECONDS = 900  # the config's default_seconds: what a request without ttl_seconds gets
SERVICE_PATH = "credbroker/object-store/service"
SECRET_CACHE_SECONDS = 5.0  # as config/credbroker.embedded.yaml ships
LATENCY_TARGET_MS = 1.0  # broker p50 <= raw p50 + 1.0 ms (sequential, c=1)
THROUGHPUT_TARGET = 0.7  # broker req/s >= 0.7 x raw req/s at c=32
RAW = "raw STS (aiobotocore)"  # the issue's baseline: the targets are against this one
ISSUER = "STS via StsIssuer"  # the broker's own STS code, in-process: what the HTTP front adds
LATENCY_TARGET_CONCURRENCY = 1
THROUGHPUT_TARGET_CONCURRENCY = 32
DISTURBED_SHARE = 0.10  # warn when other processes took more of the machine's CPU than this
CLK_TCK = os.sysconf("SC_CLK_TCK")
KIB_PER_MIB = 1024.0


# ----------------------------------------------------------------------------- processes


def _cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # PR_SET_PDEATHSIG: if the benchmark is SIGKILLed, the broker still goes.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    os.setsid()  # Ctrl-C reaches the benchmark only; it stops the broker itself


@dataclass
class Broker:
    label: str
    loop: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    rss_before_kib: int | None = None
    rss_after_kib: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/credentials"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


_UVLOOP_LAUNCHER = (
    "import sys, uvloop; uvloop.install(); "
    "from credbroker.cli import main; sys.exit(main(sys.argv[1:]))"
)


def start_broker(state: Path, config: Path, loop: str, label: str) -> Broker:
    port = free_port()
    if loop == "asyncio":
        exe = Path(sys.executable).parent / "credbroker"
        argv = [str(exe) if exe.exists() else shutil.which("credbroker") or "credbroker"]
    elif loop == "uvloop":
        argv = [sys.executable, "-c", _UVLOOP_LAUNCHER]
    else:
        raise SystemExit(f"unknown --broker-loop {loop!r} (asyncio or uvloop)")
    argv += ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    log_path = state / f"broker-{loop}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state,
            preexec_fn=_die_with_parent,  # no threads yet at this point
        )
    return Broker(label, loop, port, proc, log_path)


def wait_healthy(broker: Broker, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.proc.poll() is not None:
            raise RuntimeError(
                f"broker ({broker.loop}) exited {broker.proc.returncode}:\n{broker.log_tail()}"
            )
        conn = http.client.HTTPConnection("127.0.0.1", broker.port, timeout=1.0)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError(f"broker ({broker.loop}) not healthy after {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def loaded_uvloop(pid: int) -> bool:
    try:
        return "uvloop" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def rgw_pids(server: RgwServer) -> list[int]:
    """radosgw, ceph-osd and ceph-mon of this RGW (their pid files), for CPU accounting."""
    pids = []
    for name in ("client.rgw", "osd.0", "mon.a"):
        try:
            pid = int((server.dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{pid}").exists():
            pids.append(pid)
    return pids


def stop_rgw_dir(rgw_dir: Path) -> None:
    """Stop the daemons started from rgw_dir (idempotent; also after an interrupted `up`)."""
    if not (rgw_dir / ".credbroker-rgw-dev").exists():
        return
    subprocess.run(
        ["bash", str(SCRIPT), "down", str(rgw_dir)],
        capture_output=True,
        timeout=90,
        check=False,
    )


# ----------------------------------------------------------------------------- seeding


def seed(server: RgwServer, state: Path) -> tuple[Path, str]:
    """Bucket, sealing key, config and client token; the broker's key in the sealed store."""
    s3 = admin_s3(server)
    try:
        try:
            s3.create_bucket(Bucket=BUCKET)
        except s3.exceptions.ClientError as exc:  # a reused RGW may have it already
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketExists"):
                raise
    finally:
        s3.close()
    key_file = state / "seal.key"
    key_file.write_text(new_key() + "\n")
    key_file.chmod(0o600)
    token, digest = new_token()
    config = {
        "server": {"host": "127.0.0.1", "port": 0},
        "secret_store": {
            "kind": "embedded",
            "path": "secrets.sealed",
            "key_env": "CREDBROKER_BENCH_UNSET_KEY",
            "key_file": "seal.key",
        },
        "secret_cache_seconds": SECRET_CACHE_SECONDS,
        "object_store": {
            "flavor": "rgw",
            "endpoint": server.endpoint,
            "region": server.region,
            "role_arn": server.vend_role_arn,
            "credentials_path": SERVICE_PATH,
            "ttl": {"min_seconds": 900, "default_seconds": TTL_SECONDS, "max_seconds": 3600},
        },
        "spaces": {SPACE: {"bucket": BUCKET, "prefix": SPACE_PREFIX}},
        "clients": [
            {
                "id": "bench-rule",
                "token_sha256": digest,
                "spaces": [SPACE],
                "max_access": "write",
                "max_ttl_seconds": 3600,
            }
        ],
        "audit": {"path": "audit.jsonl"},
    }
    config_path = state / "credbroker.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    secret = {
        "access_key_id": server.broker_access_key,
        "secret_access_key": server.broker_secret_key,
    }
    command = [sys.executable, "-m", "credbroker.cli", "secrets", "put"]
    command += ["--config", str(config_path), SERVICE_PATH]
    subprocess.run(
        command,
        input=json.dumps(secret),
        text=True,
        check=True,
        capture_output=True,
        env={k: v for k, v in os.environ.items() if k != "CREDBROKER_BENCH_UNSET_KEY"},
    )
    return config_path, token


# ----------------------------------------------------------------------------- measuring


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values)
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class Result:
    """One timed measurement (one round of one target at one concurrency)."""

    target: str
    concurrency: int
    latencies_ns: list[int]
    wall_s: float
    errors: Counter[str] = field(default_factory=Counter)
    cpu_s: dict[str, float | None] = field(default_factory=dict)
    other_cpu_share: float = math.nan  # busy CPU of processes not ours, share of all CPUs

    def percentile_ms(self, p: float) -> float:
        data = sorted(self.latencies_ns)
        if not data:
            return math.nan
        index = max(0, math.ceil(p / 100.0 * len(data)) - 1)
        return data[index] / 1e6

    @property
    def throughput(self) -> float:
        return len(self.latencies_ns) / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def done(self) -> int:
        return len(self.latencies_ns) + sum(self.errors.values())


@dataclass
class Summary:
    """All rounds of one target at one concurrency: medians of the per-round figures."""

    target: str
    concurrency: int
    rounds: list[Result]

    @property
    def p50(self) -> float:
        return statistics.median(r.percentile_ms(50) for r in self.rounds)

    @property
    def p99(self) -> float:
        return statistics.median(r.percentile_ms(99) for r in self.rounds)

    @property
    def throughput(self) -> float:
        return statistics.median(r.throughput for r in self.rounds)

    @property
    def throughput_range(self) -> tuple[float, float]:
        values = [r.throughput for r in self.rounds]
        return min(values), max(values)

    @property
    def errors(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for r in self.rounds:
            total.update(r.errors)
        return total

    def cpu_us_per_request(self, who: str) -> float | None:
        values = [r.cpu_s.get(who) for r in self.rounds]
        done = sum(r.done for r in self.rounds)
        if done == 0 or any(v is None for v in values):
            return None
        return sum(v for v in values if v is not None) / done * 1e6

    @property
    def other_cpu_share(self) -> float:
        return statistics.median(r.other_cpu_share for r in self.rounds)


async def drive(
    call: Callable[[], Awaitable[None]], requests: int, concurrency: int
) -> tuple[list[int], float, Counter[str]]:
    """`requests` calls spread over `concurrency` workers; per-call latency and wall time."""
    latencies: list[int] = []
    errors: Counter[str] = Counter()
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter_ns()
            try:
                await call()
            except Exception as exc:
                errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
                continue
            latencies.append(time.perf_counter_ns() - start)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, errors


async def measure(
    target: str,
    call: Callable[[], Awaitable[None]],
    *,
    requests: int,
    warmup: int,
    concurrency: int,
    pids: dict[str, list[int]],
) -> Result:
    """Warm up (untimed), then time `requests` calls; CPU of each process group meanwhile."""
    if warmup:
        await drive(call, warmup, concurrency)

    def snapshot() -> dict[str, float | None]:
        cpu: dict[str, float | None] = {"generator": _self_cpu()}
        for who, group in pids.items():
            values = [_cpu_seconds(pid) for pid in group]
            cpu[who] = None if not group or None in values else sum(v or 0.0 for v in values)
        return cpu

    before, (busy0, total0) = snapshot(), _machine_busy()
    latencies, wall, errors = await drive(call, requests, concurrency)
    after, (busy1, total1) = snapshot(), _machine_busy()
    used: dict[str, float | None] = {}
    for who, value in after.items():
        b = before[who]
        used[who] = None if value is None or b is None else value - b
    ours = sum(v for v in used.values() if v is not None)
    other = max(0.0, (busy1 - busy0) - ours) / (total1 - total0) if total1 > total0 else math.nan
    return Result(target, concurrency, latencies, wall, errors, used, other)


class BrokerError(Exception):
    pass


@contextlib.asynccontextmanager
async def _closing_issuer(issuer: StsIssuer) -> AsyncIterator[StsIssuer]:
    try:
        yield issuer
    finally:
        await issuer.close()


async def run_benchmark(
    server: RgwServer,
    brokers: list[Broker],
    token: str,
    args: argparse.Namespace,
) -> tuple[list[Summary], dict[str, Any]]:
    # Inside the loop, SIGTERM cancels the main task, as asyncio.run does for SIGINT: an
    # exception raised from a signal handler in the middle of a callback can leave the loop
    # waiting forever.
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        return await _run_benchmark(server, brokers, token, args)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)  # this resets it to SIG_DFL
        signal.signal(signal.SIGTERM, _raise_interrupt)


async def _run_benchmark(
    server: RgwServer,
    brokers: list[Broker],
    token: str,
    args: argparse.Namespace,
) -> tuple[list[Summary], dict[str, Any]]:
    policy = render_policy(session_policy(Scope(bucket=BUCKET, prefix=SPACE_PREFIX, access=ACCESS)))
    max_conc = max(args.concurrency)
    pool = max(64, max_conc)
    rgw = rgw_pids(server)
    extra: dict[str, Any] = {"policy_chars": len(policy)}

    sts_config = AioConfig(
        max_pool_connections=pool,
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
    )
    body = json.dumps({"space": SPACE, "access": ACCESS.value}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    issuer = StsIssuer(
        endpoint=server.endpoint,
        region=server.region,
        role_arn=server.vend_role_arn,
        max_connections=pool,
    )
    parent = ServiceCredentials(server.broker_access_key, server.broker_secret_key)
    async with (
        _closing_issuer(issuer),
        get_session().create_client(
            "sts",
            endpoint_url=server.endpoint,
            region_name=server.region,
            aws_access_key_id=server.broker_access_key,
            aws_secret_access_key=server.broker_secret_key,
            config=sts_config,
        ) as sts,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool, limit_per_host=pool),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as http_session,
    ):

        async def raw_call() -> None:
            answer = await sts.assume_role(
                RoleArn=server.vend_role_arn,
                RoleSessionName="cb-" + secrets.token_hex(12),
                Policy=policy,
                DurationSeconds=TTL_SECONDS,
            )
            if not answer["Credentials"]["AccessKeyId"]:
                raise BrokerError("no AccessKeyId")

        async def issuer_call() -> None:
            await issuer.assume_role(
                parent,
                policy=policy,
                duration_seconds=TTL_SECONDS,
                session_name="cb-" + secrets.token_hex(12),
            )

        def broker_call(url: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                async with http_session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    if response.status != 201:
                        raise BrokerError(f"{response.status} {payload[:200]!r}")

            return call

        # One check of each before timing anything: a broken set-up fails here, loudly.
        await raw_call()
        await issuer_call()
        for broker in brokers:
            broker.rss_before_kib = _status_kib(broker.pid, "VmRSS")
            await broker_call(broker.url)()

        targets: list[tuple[str, Callable[[], Awaitable[None]], dict[str, list[int]]]] = [
            (RAW, raw_call, {"rgw": rgw}),
            (ISSUER, issuer_call, {"rgw": rgw}),
        ]
        for broker in brokers:
            targets.append(
                (broker.label, broker_call(broker.url), {"broker": [broker.pid], "rgw": rgw})
            )
        summaries = {
            (name, c): Summary(name, c, []) for c in args.concurrency for name, _, _ in targets
        }
        for concurrency in args.concurrency:
            for round_no in range(args.rounds):
                # Rotate the order each round: no target always runs right after another.
                shift = round_no % len(targets)
                for name, call, pids in targets[shift:] + targets[:shift]:
                    result = await measure(
                        name,
                        call,
                        requests=args.requests,
                        warmup=args.warmup,
                        concurrency=concurrency,
                        pids=pids,
                    )
                    summaries[(name, concurrency)].rounds.append(result)
                    print(
                        f"  c={concurrency} round {round_no + 1}/{args.rounds} {name}: "
                        f"p50 {result.percentile_ms(50):.2f} ms, {result.throughput:.0f} req/s",
                        file=sys.stderr,
                    )
        for broker in brokers:
            broker.rss_after_kib = _status_kib(broker.pid, "VmRSS")
            extra[f"hwm:{broker.label}"] = _status_kib(broker.pid, "VmHWM")

        if args.profile_broker:
            extra["profile"] = await profile_broker(
                brokers[0], broker_call(brokers[0].url), args, max_conc
            )
    return list(summaries.values()), extra


# ----------------------------------------------------------------------------- profiling

PROFILE_RATE = 250  # samples a second


def _start_py_spy(exe: str, pid: int, out: Path) -> subprocess.Popen[bytes]:
    # Blocking mode (py-spy's default): each sample pauses the broker for a consistent stack.
    argv = [exe, "record", "--pid", str(pid), "--rate", str(PROFILE_RATE)]
    argv += ["--format", "raw", "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def profile_broker(
    broker: Broker, call: Callable[[], Awaitable[None]], args: argparse.Namespace, conc: int
) -> dict[str, Any]:
    """An extra, untimed broker run at the top concurrency under py-spy."""
    py_spy = Path(sys.executable).parent / "py-spy"
    exe = str(py_spy) if py_spy.exists() else shutil.which("py-spy")
    if exe is None:
        return {"error": "py-spy not found (pip install py-spy into the venv)"}
    out: Path = args.profile_broker
    spy = _start_py_spy(exe, broker.pid, out)
    try:
        await asyncio.sleep(1.0)  # py-spy attaches
        if spy.poll() is not None:
            err = spy.stderr.read().decode(errors="replace") if spy.stderr else ""
            return {"error": f"py-spy exited {spy.returncode}: {err.strip()[:400]}"}
        cpu0 = _cpu_seconds(broker.pid) or 0.0
        latencies, wall, errors = await drive(call, args.profile_requests, conc)
        cpu1 = _cpu_seconds(broker.pid) or 0.0
    finally:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                await asyncio.to_thread(spy.wait, 30)
            except subprocess.TimeoutExpired:
                spy.kill()
    return {
        "file": out,
        "requests": len(latencies),
        "throughput": len(latencies) / wall if wall else math.nan,
        "cpu_us_per_request": (cpu1 - cpu0) / max(1, len(latencies)) * 1e6,
        "errors": sum(errors.values()),
    }


# Where a sample goes: the first rule that matches its stack (leaf first, then the whole stack).
_LEAF_RULES: tuple[tuple[str, str], ...] = (
    ("_SelectorSocketTransport.write", "socket send() (loopback TCP; includes waiting for a CPU)"),
    ("EpollSelector.select", "event loop: epoll wait/return, socket reads"),
    ("_read_ready", "event loop: epoll wait/return, socket reads"),
)
_STACK_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("SigV4Auth",), "sts: SigV4 signing (botocore)"),
    (("_parse_assume_role",), "sts: XML answer parsing (defusedxml)"),
    (("urlencode",), "sts: form body encoding (urlencode)"),
    (
        ("StsIssuer.assume_role", "ClientRequest.write_bytes", "client_proto", "ClientResponse"),
        "sts: aiohttp client (request and response objects)",
    ),
    (("JsonLinesAudit",), "audit record (json.dumps + os.write)"),
    (("CredentialSource",), "parent key cache"),
    (("_parse (", "model_validate"), "handler: body read, json.loads, pydantic"),
    (("authenticate",), "token check"),
    (("json_response",), "handler: json_response"),
    (("_authorize", "session_policy", "render_policy"), "vend: authorize + session policy"),
    (("Broker.vend",), "vend: the rest (lease id, timestamps, result objects)"),
    (("error_middleware",), "middleware: metrics, timing"),
    (("finish_response", "write_eof", "StreamResponse"), "server: response (Python side)"),
    (("web_protocol", "web_app", "web_request", "web_urldispatcher"), "server: aiohttp request"),
)


def _category(stack: str) -> str:
    leaf = stack.rsplit(";", 1)[-1]
    for needle, name in _LEAF_RULES:
        if needle in leaf:
            return name
    for needles, name in _STACK_RULES:
        if any(n in stack for n in needles):
            return name
    return "event loop: other"


def summarize_profile(path: Path, top: int = 15) -> list[str]:
    """Shares of py-spy's collapsed stacks by part of the vend path, and the top functions."""
    categories: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        categories[_category(stack)] += count
        own[_short_frame(stack.rsplit(";", 1)[-1])] += count
    if not total:
        return ["(no samples)"]
    lines = [f"{total} busy samples, by part of the vend path:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in categories.most_common()]
    lines.append("Top functions by own time:")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    return lines


def _short_frame(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)": keep the file, not the line.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0]
    for marker in ("site-packages/", "lib/python3.11/", "src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


# ----------------------------------------------------------------------------- report


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
    print()
    print("broker memory (VmRSS of the broker process)")
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


# ----------------------------------------------------------------------------- main


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="vend_bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
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
    if "uvloop" in args.broker_loop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            p.error("--broker-loop uvloop: uvloop is not installed in this Python")
    return args


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _cleanup_on_exit() -> Iterator[contextlib.ExitStack]:
    """An ExitStack unwound with SIGINT and SIGTERM ignored: a second Ctrl-C cannot cut the
    clean-up short. SIGTERM to the benchmark is handled like Ctrl-C."""
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
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
            for loop in args.broker_loop:
                label = "broker" if args.broker_loop == ["asyncio"] else f"broker ({loop})"
                broker = start_broker(state, config_path, loop, label)
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


if __name__ == "__main__":
    sys.exit(main())
