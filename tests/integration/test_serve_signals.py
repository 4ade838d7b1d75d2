"""`credbroker serve` as a process: a SIGHUP (logrotate's usual postrotate) leaves it serving,
since the audit file follows rotation by itself; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from credbroker.secrets.sealing import new_key

CREDBROKER = str(Path(sys.executable).parent / "credbroker")  # the installed console script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def test_sighup_leaves_serve_running_and_sigterm_stops_it(tmp_path: Path) -> None:
    (tmp_path / "seal.key").write_text(new_key())
    (tmp_path / "seal.key").chmod(0o600)
    config = tmp_path / "credbroker.yaml"
    config.write_text(
        json.dumps(
            {
                "secret_store": {"kind": "embedded", "path": "s.sealed", "key_file": "seal.key"},
                "object_store": {"endpoint": "http://127.0.0.1:9"},
                "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
                "audit": {"path": "audit.jsonl"},
            }
        )
    )
    port = _free_port()
    proc = subprocess.Popen(
        [CREDBROKER, "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while not _healthy(port):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.1)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None
        assert _healthy(port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert b"SIGHUP: the audit file follows log rotation by itself" in (
            proc.stderr.read() if proc.stderr else b""
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
