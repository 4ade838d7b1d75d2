"""Seed a dev instance of the whole product on the RGW that scripts/rgw-dev.sh just started.

- a bucket set up as vendor/rgw prescribes, with one object;
- the embedded sealed store holding the broker's keys, the read-only fallback identity's keys
  and the RGW admin keys the rotation driver uses;
- a config with two spaces, a client (token in client-token), an admin client for the
  rotation API (token in admin-token), the read-only fallback and a daily rotation of the
  broker's parent key.

The RGW keeps nothing across restarts, so the store, the fallback cache and the rotation
state are started afresh too; the sealing keys are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import botocore.session
import yaml

from credbroker.callers.tokens import new_token
from credbroker.secrets.sealing import new_key

BUCKET = "confluence-exports"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    env = os.environ
    state: Path = args.dir.resolve()

    s3 = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=env["RGW_ENDPOINT"],
        region_name=env["RGW_REGION"],
        aws_access_key_id=env["RGW_ADMIN_ACCESS_KEY"],
        aws_secret_access_key=env["RGW_ADMIN_SECRET_KEY"],
    )
    s3.create_bucket(Bucket=BUCKET)  # the RGW is new on every `up`
    s3.put_public_access_block(  # vendor/rgw: a write key must not be able to publish
        Bucket=BUCKET,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": False,  # RGW 16 refuses every PutObject with it on
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_object(Bucket=BUCKET, Key="ENG/welcome.txt", Body=b"hello from credbroker\n")

    for name in ("seal.key", "fallback.key"):
        key_file = state / name
        if not key_file.exists():
            key_file.write_text(new_key() + "\n")
            key_file.chmod(0o600)
    for stale in ("secrets.sealed", "fallback.sealed", "rotation-state.sqlite3"):
        (state / stale).unlink(missing_ok=True)

    token, digest = new_token()
    admin_token, admin_digest = new_token()
    config = {
        "server": {"host": "127.0.0.1", "port": args.port},
        "secret_store": {
            "kind": "embedded",
            "path": "secrets.sealed",
            "key_env": "CREDBROKER_SEAL_KEY",
            "key_file": "seal.key",
        },
        "object_store": {
            "flavor": "rgw",
            "endpoint": env["RGW_ENDPOINT"],
            "region": env["RGW_REGION"],
            "role_arn": env["RGW_VEND_ROLE_ARN"],
            "credentials_path": "credbroker/object-store/service",
            "ttl": {"min_seconds": 900, "default_seconds": 900, "max_seconds": 3600},
        },
        "spaces": {
            "ENG": {"bucket": BUCKET, "prefix": "ENG/"},
            "OPS": {"bucket": BUCKET, "prefix": "OPS/"},
        },
        "clients": [
            {
                "id": "demo-eng-rule",
                "token_sha256": digest,
                "spaces": ["ENG"],
                "max_access": "write",
                "max_ttl_seconds": 3600,
            },
            {
                "id": "demo-operator",
                "token_sha256": admin_digest,
                "spaces": ["OPS"],
                "max_access": "read",
                "admin": True,
            },
        ],
        "audit": {"path": "audit.jsonl"},
        "fallback": {
            "credentials_path": "credbroker/object-store/read-only",
            "role_arn": env["RGW_READ_ROLE_ARN"],
            "cache_file": "fallback.sealed",
            "key_file": "fallback.key",
            "refresh_seconds": 60,
            "max_staleness_seconds": 86400,
        },
        "rotation": {
            "credentials": [
                {
                    "name": "service",
                    "secret_path": "credbroker/object-store/service",
                    "driver": {
                        "kind": "rgw",
                        "user": env["RGW_BROKER_UID"],
                        "admin_credentials_path": "credbroker/object-store/rgw-admin",
                    },
                    "schedule": {"interval_seconds": 86400},
                    "grace_seconds": 60,
                }
            ]
        },
        "state": {"kind": "sqlite", "path": "rotation-state.sqlite3"},
    }
    config_path = state / "credbroker.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    for name, value in (("client-token", token), ("admin-token", admin_token)):
        token_file = state / name
        token_file.write_text(value + "\n")
        token_file.chmod(0o600)

    seeds = {
        "credbroker/object-store/service": ("RGW_BROKER_ACCESS_KEY", "RGW_BROKER_SECRET_KEY"),
        "credbroker/object-store/read-only": (
            "RGW_READONLY_ACCESS_KEY",
            "RGW_READONLY_SECRET_KEY",
        ),
        "credbroker/object-store/rgw-admin": ("RGW_ADMIN_ACCESS_KEY", "RGW_ADMIN_SECRET_KEY"),
    }
    for path, (access_var, secret_var) in seeds.items():
        secret = {"access_key_id": env[access_var], "secret_access_key": env[secret_var]}
        subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
            [
                sys.executable,
                "-m",
                "credbroker.cli",
                "secrets",
                "put",
                "--config",
                str(config_path),
                path,
            ],
            input=json.dumps(secret),
            text=True,
            check=True,
        )
    print(f"seeded: bucket {BUCKET}, config {config_path}, tokens client-token, admin-token")


if __name__ == "__main__":
    main()
