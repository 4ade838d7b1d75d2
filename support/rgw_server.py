"""Start, reuse and stop the throw-away Ceph RADOS Gateway the tests and benchmarks run against.

The gateway itself is built by ``scripts/rgw-dev.sh`` (see its header for the identities and the
RGW traps); this module only runs that script and reads the ``DIR/env`` file it writes. It has no
pytest dependency: the tests, the benchmarks and the dev scripts all use it.

Set ``CREDBROKER_TEST_RGW_ENV`` to the ``env`` file of an RGW that is already running (for
example ``scripts/rgw-dev.sh up var/rgw`` -> ``var/rgw/env``) to reuse it: nothing is then started
or stopped.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import botocore.session
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "rgw-dev.sh"
REUSE_ENV_VAR = "CREDBROKER_TEST_RGW_ENV"
START_TIMEOUT_S = 300.0  # first run on a fresh machine includes apt-get install
STOP_TIMEOUT_S = 60.0


class RgwStartError(RuntimeError):
    """RGW did not come up (or its env file is unusable); the message says why."""


@dataclass(frozen=True)
class RgwServer:
    endpoint: str  # http://127.0.0.1:PORT, path-style S3 + STS + IAM + admin ops API
    region: str  # "default": RGW's zonegroup; the only LocationConstraint it accepts
    admin_uid: str
    admin_access_key: str
    admin_secret_key: str
    broker_uid: str
    broker_access_key: str
    broker_secret_key: str
    readonly_uid: str
    readonly_access_key: str
    readonly_secret_key: str
    vend_role_arn: str  # trusted by the broker user; s3:* (session policies narrow it)
    read_role_arn: str  # trusted by the read-only user; read actions only
    dir: Path
    rgw_port: int
    mon_port: int
    boot_seconds: float  # wall time of `rgw-dev.sh up` (as the script measured it when reused)
    owned: bool  # True if start_rgw started it; stop_rgw only stops owned servers


def parse_env_file(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines (an optional ``export`` prefix and shell quoting are accepted)."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {raw!r}")
        words = shlex.split(value)
        values[key.strip()] = words[0] if words else ""
    return values


def server_from_env(env: Mapping[str, str], *, owned: bool = False) -> RgwServer:
    """The RGW described by the variables of its env file (or an environment that sourced it)."""
    return RgwServer(
        endpoint=env["RGW_ENDPOINT"],
        region=env["RGW_REGION"],
        admin_uid=env["RGW_ADMIN_UID"],
        admin_access_key=env["RGW_ADMIN_ACCESS_KEY"],
        admin_secret_key=env["RGW_ADMIN_SECRET_KEY"],
        broker_uid=env["RGW_BROKER_UID"],
        broker_access_key=env["RGW_BROKER_ACCESS_KEY"],
        broker_secret_key=env["RGW_BROKER_SECRET_KEY"],
        readonly_uid=env["RGW_READONLY_UID"],
        readonly_access_key=env["RGW_READONLY_ACCESS_KEY"],
        readonly_secret_key=env["RGW_READONLY_SECRET_KEY"],
        vend_role_arn=env["RGW_VEND_ROLE_ARN"],
        read_role_arn=env["RGW_READ_ROLE_ARN"],
        dir=Path(env["RGW_DIR"]),
        rgw_port=int(env["RGW_PORT"]),
        mon_port=int(env["MON_PORT"]),
        boot_seconds=float(env["RGW_BOOT_SECONDS"]),
        owned=owned,
    )


def server_from_env_file(path: Path, *, owned: bool = False) -> RgwServer:
    path = Path(path)
    try:
        return server_from_env(parse_env_file(path), owned=owned)
    except (OSError, KeyError, ValueError) as exc:
        raise RgwStartError(f"unusable RGW env file {path}: {exc!r}") from exc


def reuse_from_environment() -> RgwServer | None:
    """The already-running RGW named by $CREDBROKER_TEST_RGW_ENV, or None if it is unset."""
    path = os.environ.get(REUSE_ENV_VAR)
    if not path:
        return None
    return server_from_env_file(Path(path), owned=False)


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports free on 127.0.0.1 right now (all sockets held open while choosing)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _run_script(
    *args: str, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own script, fixed arguments
        ["bash", str(SCRIPT), *args],  # noqa: S607 - bash from PATH, as the scripts expect
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_rgw(
    dir: Path, rgw_port: int, mon_port: int, *, timeout: float = START_TIMEOUT_S
) -> RgwServer:
    """Boot a fresh RGW from ``dir`` (wiped) on the given loopback ports; raise RgwStartError."""
    dir = Path(dir).resolve()
    env = {**os.environ, "RGW_PORT": str(rgw_port), "MON_PORT": str(mon_port)}
    started = time.monotonic()
    try:
        proc = _run_script("up", str(dir), env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _stop_quietly(dir)
        out = exc.stderr if isinstance(exc.stderr, str) else (exc.stderr or b"").decode()
        raise RgwStartError(
            f"rgw-dev.sh up {dir} timed out after {timeout:.0f}s\n{_tail(out)}"
        ) from None
    except OSError as exc:
        raise RgwStartError(f"cannot run {SCRIPT}: {exc}") from exc
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        _stop_quietly(dir)  # the script stops what it started; this covers a killed script
        raise RgwStartError(
            f"rgw-dev.sh up {dir} exited {proc.returncode}\n{_tail(proc.stdout + proc.stderr)}"
        )
    server = server_from_env_file(dir / "env", owned=True)
    return replace(server, boot_seconds=round(elapsed, 2))


def _stop_quietly(dir: Path) -> None:
    with suppress(OSError, subprocess.TimeoutExpired):
        _run_script("down", str(dir), env=dict(os.environ), timeout=STOP_TIMEOUT_S)


def stop_rgw(server: RgwServer) -> None:
    """Stop an RGW that start_rgw started; a reused one is left alone."""
    if not server.owned:
        return
    proc = _run_script("down", str(server.dir), env=dict(os.environ), timeout=STOP_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(
            f"rgw-dev.sh down {server.dir} exited {proc.returncode}\n"
            f"{_tail(proc.stdout + proc.stderr)}"
        )


# ---------------------------------------------------------------- botocore clients and buckets


def botocore_client(
    server: RgwServer,
    service: str,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    *,
    region: str | None = None,
    **config: Any,
) -> Any:
    """A botocore client for ``service`` ("s3", "sts", "iam") on the RGW; close() it when done.

    ``region`` overrides the SigV4 signing region (default: server.region); ``config`` goes to
    botocore's Config (e.g. parameter_validation=False, signature_version=botocore.UNSIGNED).
    """
    cfg = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        **config,
    )
    return botocore.session.get_session().create_client(
        service,
        endpoint_url=server.endpoint,
        region_name=region or server.region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=session_token,
        config=cfg,
    )


def admin_s3(server: RgwServer) -> Any:
    return botocore_client(server, "s3", server.admin_access_key, server.admin_secret_key)


def create_bucket(s3_admin: Any, server: RgwServer, name: str) -> None:
    """Create an admin-owned bucket set up the way credbroker expects buckets to be.

    - A bucket policy grants the admin user everything in it: objects written by role sessions
      are owned by the session's parent user, and without this grant the bucket owner gets
      AccessDenied reading them (RGW 16 object ACLs).
    - Public access block with IgnorePublicAcls: a session allowed only s3:PutObject can
      otherwise publish an object with ``x-amz-grant-read`` (RGW 16 asks for no
      s3:PutObjectAcl). Public grants are then accepted but have no effect. BlockPublicAcls
      stays off: on RGW 16 it refuses every PutObject, even a private one by the owner.
    Role sessions need no grant here: their role and session policies decide.
    """
    s3_admin.create_bucket(Bucket=name)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam:::user/{server.admin_uid}"]},
                "Action": ["s3:*"],
                "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"],
            }
        ],
    }
    s3_admin.put_bucket_policy(Bucket=name, Policy=json.dumps(policy, separators=(",", ":")))
    s3_admin.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": False,  # RGW 16: True refuses every PutObject
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
