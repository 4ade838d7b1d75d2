"""Two `credbroker serve` processes on one real PostgreSQL schema and the real RGW: the live
control plane holds on every replica, without a restart, and survives one.

- a principal added through broker A (admin API) vends through broker B, and the key works
  on RGW within its prefix only;
- a token revoked through A is refused by B; a client revoked from the CLI is refused by both;
- a freeze set through A stops vends and presigns on both (503 frozen, the reason, no
  Retry-After) and /readyz says frozen; lifted through B, vending resumes on both;
- a restarted broker has lost nothing: principals, tokens and freezes come back from the store.

How long each change took to hold on the other process is printed (the 2 s bound is measured
by bench/control_bench.py, not asserted here: tests carry no timing assertions). Waits below
give up after 20 s, which only a broken propagation reaches.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from botocore.exceptions import ClientError

from credbroker.callers.tokens import new_token
from credbroker.secrets.embedded import EmbeddedSecretStore
from credbroker.secrets.sealing import load_key, new_key
from support.rgw_server import RgwServer
from tests.contract.state_records import POSTGRES_DSN
from tests.integration.conftest import MAIN_BUCKET, SERVICE_PATH, s3_client

pytestmark = pytest.mark.rgw

CREDBROKER = str(Path(sys.executable).parent / "credbroker")
GIVE_UP = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(
    port: int, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}"), dict(answer.headers)
    except urllib.error.HTTPError as refused:
        raw = refused.read()
        return refused.code, json.loads(raw or b"{}"), dict(refused.headers)


def until(what: str, check: Callable[[], bool]) -> float:
    """Seconds until `check()` holds (polled every 20 ms); fails after GIVE_UP."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < GIVE_UP, f"{what}: not within {GIVE_UP} s"
        time.sleep(0.02)
    took = time.monotonic() - started
    print(f"{what}: {took:.3f} s")
    return took


def wait_vend(what: str, port: int, token: str, status: int) -> float:
    """Seconds until a vend through `port` with `token` gets `status`."""
    return until(what, lambda: call(port, "POST", "/v1/credentials", token, VEND)[0] == status)


VEND = {"space": "ENG", "access": "write", "reason": "control plane test"}


@dataclass
class Deployment:
    config: Path
    admin_token: str
    ports: list[int]
    procs: list[subprocess.Popen[bytes]]

    def start(self, index: int) -> None:
        port = self.ports[index]
        proc = subprocess.Popen(
            [CREDBROKER, "serve", "--config", str(self.config), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if index < len(self.procs):
            self.procs[index] = proc
        else:
            self.procs.append(proc)

        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return call(port, "GET", "/healthz")[0] == 200
            except OSError:
                return False

        until(f"broker {index} started", up)

    def stop(self, index: int) -> None:
        proc = self.procs[index]
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        if proc.stderr is not None:
            proc.stderr.close()

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [CREDBROKER, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def deployment(rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path) -> Iterator[Deployment]:
    import asyncio

    schema = f"cbtest_{uuid.uuid4().hex[:12]}"
    (tmp_path / "seal.key").write_text(new_key())
    (tmp_path / "seal.key").chmod(0o600)
    (tmp_path / "pg.dsn").write_text(POSTGRES_DSN)

    async def seed() -> None:
        store = EmbeddedSecretStore(
            tmp_path / "secrets.sealed", load_key(key_file=tmp_path / "seal.key")
        )
        await store.write(
            SERVICE_PATH,
            {"access_key_id": rgw.broker_access_key, "secret_access_key": rgw.broker_secret_key},
            cas=None,
        )

    asyncio.run(seed())
    admin_token, admin_hash = new_token()
    config = tmp_path / "credbroker.yaml"
    config.write_text(
        json.dumps(
            {
                "secret_store": {
                    "kind": "embedded",
                    "path": "secrets.sealed",
                    "key_env": "CREDBROKER_TEST_UNSET_KEY",
                    "key_file": "seal.key",
                },
                "secret_cache_seconds": 0,
                "object_store": {
                    "flavor": "rgw",
                    "endpoint": rgw.endpoint,
                    "region": rgw.region,
                    "role_arn": rgw.vend_role_arn,
                    "credentials_path": SERVICE_PATH,
                    "ttl": {"min_seconds": 900, "default_seconds": 900, "max_seconds": 3600},
                },
                "spaces": {
                    "ENG": {"bucket": MAIN_BUCKET, "prefix": "ENG/"},
                    "OPS": {"bucket": MAIN_BUCKET, "prefix": "OPS/"},
                },
                "clients": [
                    {
                        "id": "root",
                        "token_sha256": admin_hash,
                        "spaces": ["ENG"],
                        "roles": ["admin", "operator"],
                    }
                ],
                "audit": {"path": "audit.jsonl"},
                "state": {"kind": "postgres", "dsn": {"file": "pg.dsn"}, "schema_name": schema},
            }
        )
    )
    deployment = Deployment(config, admin_token, [free_port(), free_port()], [])
    try:
        deployment.start(0)
        deployment.start(1)
        yield deployment
    finally:
        for proc in deployment.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()

        async def drop() -> None:
            connection = await asyncpg.connect(POSTGRES_DSN)
            try:
                await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            finally:
                await connection.close()

        asyncio.run(drop())


def test_two_replicas_share_principals_tokens_and_freezes(
    deployment: Deployment, rgw: RgwServer
) -> None:
    a, b = deployment.ports
    root = deployment.admin_token

    # A principal added through A vends through B, and the key works on RGW in its prefix.
    status, added, _ = call(
        a,
        "POST",
        "/v1/admin/clients",
        root,
        {"id": "rule-live", "spaces": ["ENG"], "max_access": "write", "max_ttl_seconds": 1800},
    )
    assert status == 201, added
    assert added["source"] == "store" and added["createdBy"] == "api:root"
    status, issued, _ = call(a, "POST", "/v1/admin/clients/rule-live/tokens", root, {})
    assert status == 201, issued
    token = issued["token"]
    wait_vend("new principal vends through the other broker", b, token, 201)
    status, vended, _ = call(b, "POST", "/v1/credentials", token, VEND)
    assert status == 201 and vended["prefix"] == "ENG/"
    s3 = s3_client(rgw, vended["accessKeyId"], vended["secretAccessKey"], vended["sessionToken"])
    s3.put_object(Bucket=MAIN_BUCKET, Key="ENG/control-plane.txt", Body=b"live")
    with pytest.raises(ClientError):
        s3.put_object(Bucket=MAIN_BUCKET, Key="OPS/control-plane.txt", Body=b"no")

    # Lists and shows never carry a token or its hash in full.
    status, shown, _ = call(b, "GET", "/v1/admin/clients/rule-live", root)
    assert status == 200 and [t["id"] for t in shown["tokens"]] == [issued["id"]]
    text = json.dumps(shown)
    assert token not in text and len(shown["tokens"][0]["hashPrefix"]) == 8
    status, listing, _ = call(b, "GET", "/v1/admin/clients", root)
    sources = {c["id"]: c["source"] for c in listing["clients"]}
    assert sources == {"root": "config", "rule-live": "store"}

    # A second token (the rule switches), then the first one revoked through A: B refuses it.
    status, second, _ = call(b, "POST", "/v1/admin/clients/rule-live/tokens", root, {})
    assert status == 201
    status, third, _ = call(b, "POST", "/v1/admin/clients/rule-live/tokens", root, {})
    assert (status, third["error"]["code"]) == (409, "too_many_tokens")
    status, _, _ = call(a, "DELETE", f"/v1/admin/clients/rule-live/tokens/{issued['id']}", root)
    assert status == 200
    wait_vend("revoked token refused by the other broker", b, token, 401)
    assert call(a, "POST", "/v1/credentials", token, VEND)[0] == 401
    wait_vend("second token vends on the other broker", a, second["token"], 201)

    # A freeze set through A stops vends and presigns on both, with the reason.
    status, freeze, _ = call(a, "POST", "/v1/admin/freezes", root, {"reason": "INC-4711 key leak"})
    assert status == 201, freeze
    for port in (a, b):
        wait_vend(f"freeze holds on :{port}", port, second["token"], 503)
        status, refused, headers = call(port, "POST", "/v1/credentials", second["token"], VEND)
        assert refused["error"]["code"] == "frozen"
        assert "INC-4711 key leak" in refused["error"]["message"]
        assert "Retry-After" not in headers
        status, refused, _ = call(
            port,
            "POST",
            "/v1/presign",
            second["token"],
            {"space": "ENG", "key": "a", "method": "GET"},
        )
        assert (status, refused["error"]["code"]) == (503, "frozen")
        status, ready, _ = call(port, "GET", "/readyz")
        assert (status, ready["status"]) == (200, "frozen"), ready
        assert [f["id"] for f in ready["freezes"]] == [freeze["id"]]

    # Restart B: the freeze, the principal and its token are still there.
    deployment.stop(1)
    deployment.start(1)
    status, refused, _ = call(b, "POST", "/v1/credentials", second["token"], VEND)
    assert (status, refused["error"]["code"]) == (503, "frozen")

    # Lifted through B: both vend again.
    status, lifted, _ = call(b, "DELETE", f"/v1/admin/freezes/{freeze['id']}", root)
    assert status == 200 and lifted["liftedBy"] == "api:root"
    for port in (a, b):
        wait_vend(f"unfreeze holds on :{port}", port, second["token"], 201)

    # The CLI works on the same store: it sees both principals, and revokes one for both.
    listing_text = deployment.cli("clients", "list")
    assert "root  [config]" in listing_text and "rule-live  [store]" in listing_text
    assert second["token"] not in listing_text
    deployment.cli("clients", "revoke", "rule-live")
    for port in (a, b):
        wait_vend(f"CLI revocation holds on :{port}", port, second["token"], 401)

    # Every change was audited by the broker that made it; no token in any audit record.
    audit = (deployment.config.parent / "audit.jsonl").read_text()
    events = [json.loads(line)["event"] for line in audit.splitlines()]
    for event in (
        "client_added",
        "token_issued",
        "token_revoked",
        "freeze_set",
        "freeze_lifted",
        "client_revoked",
    ):
        assert event in events, event
    assert token not in audit and second["token"] not in audit
