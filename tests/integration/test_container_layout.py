"""`credbroker serve` as a plain process laid out like the image (issue 16): the config folder
read-only, CREDBROKER_STATE_DIR a writable state folder, nothing else writable; it starts,
answers /readyz ready, vends a key that works on the real RGW, and (strace) wrote nothing
outside the state folder. The image's uid cannot be taken here (the suite runs as one user)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from credbroker.callers.tokens import new_token
from credbroker.secrets.sealing import new_key
from support.rgw_server import RgwServer, free_port
from tests.integration.conftest import SERVICE_PATH, s3_client

pytestmark = pytest.mark.rgw

BIN = Path(sys.executable).parent
STRACE = shutil.which("strace")
# A syscall that writes or creates a file, and the path it names (strace -e trace=%file).
WRITES = re.compile(
    r'^\d+\s+(?:(?:openat|open)\(.*?"(?P<open>[^"]+)", (?P<flags>[A-Z_|]+)'
    r"|(?P<call>mkdir|mkdirat|rename|renameat2?|unlink|unlinkat|rmdir|creat|link|symlink|chmod|"
    r'fchmodat|truncate)\((?:AT_FDCWD, )?"(?P<path>[^"]+)")'
)


def http(url: str, body: bytes | None = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def written_paths(log: str) -> set[str]:
    paths = set()
    for line in log.splitlines():
        match = WRITES.match(line)
        if match is None or "= -1" in line:
            continue
        if match["open"] is not None:
            if not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", match["flags"]):
                continue
            paths.add(match["open"])
        else:
            paths.add(match["path"])
    return paths


@pytest.mark.skipif(STRACE is None, reason="strace not installed")
def test_serve_laid_out_like_the_image_starts_vends_and_writes_only_its_state_dir(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path
) -> None:
    assert STRACE is not None
    etc, state = tmp_path / "etc" / "credbroker", tmp_path / "var" / "lib" / "credbroker"
    etc.mkdir(parents=True)
    state.mkdir(parents=True)
    (etc / "seal.key").write_text(new_key())
    (etc / "seal.key").chmod(0o400)
    token, digest = new_token()
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        # No path for the store, the audit log or the state: the image's defaults.
        "secret_store": {"kind": "embedded", "key_env": "CB_UNSET_KEY", "key_file": "seal.key"},
        "object_store": {
            "flavor": "rgw",
            "endpoint": rgw.endpoint,
            "region": rgw.region,
            "role_arn": rgw.vend_role_arn,
            "credentials_path": SERVICE_PATH,
        },
        "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
        "clients": [
            {"id": "eng-reader", "token_sha256": digest, "spaces": ["ENG"], "max_access": "read"}
        ],
    }
    (etc / "credbroker.yaml").write_text(yaml.safe_dump(config))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(state),
        "PYTHONDONTWRITEBYTECODE": "1",  # as the image
        "CREDBROKER_STATE_DIR": str(state),
    }
    conf = str(etc / "credbroker.yaml")
    keys = json.dumps(
        {"access_key_id": rgw.broker_access_key, "secret_access_key": rgw.broker_secret_key}
    )
    (etc / "credbroker.yaml").chmod(0o444)
    etc.chmod(0o555)  # read-only, as mounted :ro
    try:
        subprocess.run(
            [str(BIN / "credbroker"), "check-config", conf], env=env, cwd=state, check=True
        )
        put = subprocess.run(
            [
                str(BIN / "credbroker"),
                "secrets",
                "put",
                "--config",
                conf,
                "--cas",
                "0",
                SERVICE_PATH,
            ],
            input=keys,
            text=True,
            env=env,
            cwd=state,
            check=False,
            capture_output=True,
        )
        assert put.returncode == 0, put.stdout + put.stderr
        trace = tmp_path / "strace.log"
        server = subprocess.Popen(
            [
                STRACE,
                "-f",
                "-qq",
                "-e",
                "trace=%file",
                "-o",
                str(trace),
                str(BIN / "credbroker"),
                "serve",
                "--config",
                conf,
            ],
            env=env,
            cwd=state,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    status, body = http(base + "/readyz")
                    if status == 200:
                        break
                except OSError:
                    pass
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, body
                time.sleep(0.3)
            status, body = http(
                base + "/v1/credentials",
                b'{"space": "ENG", "access": "read", "reason": "container check"}',
                token,
            )
            assert status == 201, body
            vended = json.loads(body)
            s3 = s3_client(
                rgw, vended["accessKeyId"], vended["secretAccessKey"], vended["sessionToken"]
            )
            s3.list_objects_v2(Bucket="cb-main", Prefix="ENG/")
        finally:
            # SIGTERM to credbroker itself (strace's child), as the container runtime sends it.
            children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
            for child in children:
                os.kill(int(child), signal.SIGTERM)
            output, _ = server.communicate(timeout=30)
        assert server.returncode == 0, output
    finally:
        etc.chmod(0o755)

    written = written_paths(trace.read_text())
    outside = sorted(
        p for p in written if not (p.startswith(str(state)) or p.startswith(("/dev/", "/proc/")))
    )
    assert outside == [], outside
    # The trace did see the broker's own writes (the audit log, the state store).
    assert {str(state / "audit.jsonl"), str(state / "rotation-state.sqlite3")} <= written
    assert {p.name for p in state.iterdir()} >= {
        "secrets.sealed",
        "audit.jsonl",
        "rotation-state.sqlite3",
    }
