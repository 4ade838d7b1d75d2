"""Seed a broker instance on an RGW: what scripts/dev_seed.py and the benchmark share.

A state folder gets a sealing key, a config whose secret store is the embedded sealed file next
to it, and object-store keys put into that store through the real CLI (`credbroker secrets
put`). Each caller adds its own spaces, clients and extra config sections.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from credbroker.secrets.sealing import new_key
from support.rgw_server import RgwServer

SERVICE_PATH = "credbroker/object-store/service"  # the broker's parent key in the store
SEAL_KEY_FILE = "seal.key"
SEALED_STORE_FILE = "secrets.sealed"
CONFIG_FILE = "credbroker.yaml"


def write_key_file(path: Path, *, keep_existing: bool = False) -> None:
    """A new sealing key, readable by its owner only (unless one is there and is kept)."""
    if keep_existing and path.exists():
        return
    path.write_text(new_key() + "\n")
    path.chmod(0o600)


def ensure_bucket(s3: Any, bucket: str) -> None:
    """Create the bucket; one the admin already owns (a reused RGW) is fine."""
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketExists"):
            raise


def broker_config(
    server: RgwServer,
    *,
    port: int,
    key_env: str,
    spaces: Mapping[str, tuple[str, str]],
    clients: list[dict[str, Any]],
    default_ttl_seconds: int = 900,
) -> dict[str, Any]:
    """The config every seeded broker starts from: embedded sealed store (key in SEAL_KEY_FILE
    unless $key_env is set), the RGW's STS with the vend role, `spaces` as {name: (bucket,
    prefix)}, `clients` as given, audit to audit.jsonl."""
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "secret_store": {
            "kind": "embedded",
            "path": SEALED_STORE_FILE,
            "key_env": key_env,
            "key_file": SEAL_KEY_FILE,
        },
        "object_store": {
            "flavor": "rgw",
            "endpoint": server.endpoint,
            "region": server.region,
            "role_arn": server.vend_role_arn,
            "credentials_path": SERVICE_PATH,
            "ttl": {
                "min_seconds": 900,
                "default_seconds": default_ttl_seconds,
                "max_seconds": 3600,
            },
        },
        "spaces": {
            name: {"bucket": bucket, "prefix": prefix} for name, (bucket, prefix) in spaces.items()
        },
        "clients": clients,
        "audit": {"path": "audit.jsonl"},
    }


def write_config(state: Path, config: Mapping[str, Any]) -> Path:
    path = state / CONFIG_FILE
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def put_secret(
    config_path: Path,
    path: str,
    access_key: str,
    secret_key: str,
    *,
    env: Mapping[str, str] | None = None,
    quiet: bool = False,
) -> None:
    """Store an object-store key pair at `path` with `credbroker secrets put` (the real CLI)."""
    secret = {"access_key_id": access_key, "secret_access_key": secret_key}
    command = [sys.executable, "-m", "credbroker.cli", "secrets", "put"]
    command += ["--config", str(config_path), path]
    subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        command,
        input=json.dumps(secret),
        text=True,
        check=True,
        capture_output=quiet,
        env=dict(os.environ if env is None else env),
    )
