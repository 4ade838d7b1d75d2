"""The broker under py-spy: one untimed run at the top concurrency, and where its time went."""

from __future__ import annotations

import asyncio
import math
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.vend.measurement import Call, drive
from bench.vend.processes import Broker, cpu_seconds

PROFILE_RATE = 250  # samples a second


def _start_py_spy(exe: str, pid: int, out: Path) -> subprocess.Popen[bytes]:
    # Blocking mode (py-spy's default): each sample pauses the broker for a consistent stack.
    argv = [exe, "record", "--pid", str(pid), "--rate", str(PROFILE_RATE)]
    argv += ["--format", "raw", "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def profile_broker(
    broker: Broker, call: Call, *, out: Path, requests: int, concurrency: int
) -> dict[str, Any]:
    """An extra, untimed run of `call` at `concurrency` with py-spy recording the broker."""
    py_spy = Path(sys.executable).parent / "py-spy"
    exe = str(py_spy) if py_spy.exists() else shutil.which("py-spy")
    if exe is None:
        return {"error": "py-spy not found (pip install py-spy into the venv)"}
    spy = _start_py_spy(exe, broker.pid, out)
    try:
        await asyncio.sleep(1.0)  # py-spy attaches
        if spy.poll() is not None:
            err = spy.stderr.read().decode(errors="replace") if spy.stderr else ""
            return {"error": f"py-spy exited {spy.returncode}: {err.strip()[:400]}"}
        cpu0 = cpu_seconds(broker.pid) or 0.0
        latencies, wall, errors = await drive(call, requests, concurrency)
        cpu1 = cpu_seconds(broker.pid) or 0.0
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
    (("ParentKeySource",), "parent key cache"),
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
