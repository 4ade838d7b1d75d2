"""`credbroker serve --workers 2` on the real RGW: one port, two processes that both serve,
metrics added up across them, a crashed worker replaced, SIGTERM stops all."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from credbroker.callers.tokens import new_token
from support.rgw_server import RgwServer, free_port
from support.seeding import (
    SEAL_KEY_FILE,
    SERVICE_PATH,
    broker_config,
    put_secret,
    write_config,
    write_key_file,
)

pytestmark = pytest.mark.rgw

_KEY_ENV = "CREDBROKER_WORKERS_TEST_UNSET_KEY"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":  # a dead child not yet reaped is gone
            found.append(int(entry.name))
    return sorted(found)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _vend(port: int, token: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/credentials",
        data=b'{"space": "ENG", "access": "read"}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    # A new connection each time: SO_REUSEPORT spreads connections, not requests.
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


class Workers:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, token: str, state: Path) -> None:
        self.proc, self.port, self.token, self.state = proc, port, token, state

    def wait_workers(self, count: int, timeout: float = 60) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "the supervisor exited"
            pids = _children(self.proc.pid)
            if len(pids) == count and _get(f"http://127.0.0.1:{self.port}/healthz")[0] == 200:
                return pids
            assert time.monotonic() < deadline, f"workers: {pids}"
            time.sleep(0.2)


@pytest.fixture
def workers(rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path) -> Iterator[Workers]:
    bucket, _ = buckets
    write_key_file(tmp_path / SEAL_KEY_FILE)
    token, digest = new_token()
    port = free_port()
    config = broker_config(
        rgw,
        port=port,
        key_env=_KEY_ENV,
        spaces={"ENG": (bucket, "ENG/")},
        clients=[{"id": "rule", "token_sha256": digest, "spaces": ["ENG"]}],
    )
    config["server"]["workers"] = 2
    config_path = write_config(tmp_path, config)
    env = {k: v for k, v in os.environ.items() if k != _KEY_ENV}
    put_secret(
        config_path, SERVICE_PATH, rgw.broker_access_key, rgw.broker_secret_key, env=env, quiet=True
    )
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "credbroker", "serve", "--config", str(config_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        yield Workers(proc, port, token, tmp_path)
    finally:
        log.close()
        children = _children(proc.pid)  # before the supervisor goes: they would be reparented
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def _requests_ok(port: int) -> float:
    status, body = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    match = re.search(
        rb'^credbroker_requests_total\{outcome="ok",route="/v1/credentials"\} (\S+)$',
        body,
        re.MULTILINE,
    )
    return float(match.group(1)) if match else 0.0


def test_two_workers_share_the_port_and_the_metrics(workers: Workers) -> None:
    pids = workers.wait_workers(2)
    statuses = [_vend(workers.port, workers.token) for _ in range(60)]
    assert statuses == [201] * 60
    # Both processes served: each keeps an audit chain of its own, named by its pid.
    vends = [
        json.loads(line)
        for line in (workers.state / "audit.jsonl").read_text().splitlines()
        if '"event":"vend"' in line
    ]
    by_pid = Counter(int(record["chain"].split(":")[1]) for record in vends)
    assert sorted(by_pid) == sorted(pids) and sum(by_pid.values()) == 60, by_pid
    # Any worker answers the scrape with the sum of both.
    assert [_requests_ok(workers.port) for _ in range(6)] == [60.0] * 6


def test_a_crashed_worker_is_replaced_and_sigterm_stops_all(workers: Workers) -> None:
    first, second = workers.wait_workers(2)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while first in _children(workers.proc.pid):  # the signal is delivered asynchronously
        assert time.monotonic() < deadline, "the killed worker is still there"
        time.sleep(0.05)
    pids = workers.wait_workers(2)
    assert first not in pids and second in pids
    assert [_vend(workers.port, workers.token) for _ in range(10)] == [201] * 10
    workers.proc.send_signal(signal.SIGTERM)
    assert workers.proc.wait(timeout=60) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


def test_workers_go_when_the_supervisor_is_killed(workers: Workers) -> None:
    """SIGKILL leaves the supervisor no chance to stop them: the kernel tells each worker
    (PR_SET_PDEATHSIG), so none keeps serving the port alone."""
    pids = workers.wait_workers(2)
    workers.proc.kill()
    workers.proc.wait()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, [pid for pid in pids if _alive(pid)]
        time.sleep(0.1)
    assert _get(f"http://127.0.0.1:{workers.port}/healthz")[0] == 0  # nothing listens


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
