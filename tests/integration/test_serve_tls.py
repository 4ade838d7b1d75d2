"""`credbroker serve` as a process over HTTPS: the certificate file is replaced, a SIGHUP makes
new connections get the new certificate while a connection opened before keeps working."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from credbroker.secrets.sealing import new_key
from tests.tls_certs import TestCa

CREDBROKER = str(Path(sys.executable).parent / "credbroker")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connect(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost")


def _healthz(conn: ssl.SSLSocket) -> bytes:
    """One GET /healthz on a kept-alive connection; the whole answer."""
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += conn.recv(4096)
    return head + b"\r\n\r\n" + body


def _cn(conn: ssl.SSLSocket) -> str:
    cert: Any = conn.getpeercert()
    return str(dict(x[0] for x in cert["subject"])["commonName"])


def test_sighup_reloads_the_certificate_for_new_connections(tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    first = ca.issue("server", "credbroker.first", server=True)
    (tmp_path / "seal.key").write_text(new_key())
    (tmp_path / "seal.key").chmod(0o600)
    config = tmp_path / "credbroker.yaml"
    config.write_text(
        json.dumps(
            {
                "server": {"tls": {"cert_file": "server.crt", "key_file": "server.key"}},
                "secret_store": {"kind": "embedded", "path": "s.sealed", "key_file": "seal.key"},
                "object_store": {"endpoint": "http://127.0.0.1:9"},
                "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
                "audit": {"path": "audit.jsonl"},
            }
        )
    )
    port = _free_port()
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    proc = subprocess.Popen(
        [CREDBROKER, "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                kept = _connect(port, context)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.1)
        assert _healthz(kept).startswith(b"HTTP/1.1 200")
        assert _cn(kept) == "credbroker.first"

        renewed = ca.issue("renewed", "credbroker.renewed", server=True)
        os.replace(renewed.cert, first.cert)  # as certbot or cert-manager would
        os.replace(renewed.key, first.key)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while True:
            fresh = _connect(port, context)
            name = _cn(fresh)
            if name == "credbroker.renewed":
                break
            fresh.close()
            assert time.monotonic() < deadline, "the new certificate was not picked up"
            time.sleep(0.1)
        assert _healthz(fresh).startswith(b"HTTP/1.1 200")
        fresh.close()
        # The connection opened before the reload was not dropped.
        assert _healthz(kept).startswith(b"HTTP/1.1 200")
        assert _cn(kept) == "credbroker.first"
        kept.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log = proc.stderr.read() if proc.stderr else b""
        assert b"TLS certificate reloaded" in log and b"serving on https://" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
