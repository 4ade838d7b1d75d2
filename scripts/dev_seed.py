"""Seed a dev instance: bucket, sealing key, the broker's keys in the embedded store, a client.

Reads the RGW identities from the RGW_* environment written by scripts/rgw-dev.sh.
Idempotent: re-running keeps the sealing key and mints a fresh client token.
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
    s3.put_object(Bucket=BUCKET, Key="ENG/welcome.txt", Body=b"hello from credbroker\n")

    key_file = state / "seal.key"
    if not key_file.exists():
        key_file.write_text(new_key() + "\n")
        key_file.chmod(0o600)

    token, digest = new_token()
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
            }
        ],
        "audit": {"path": "audit.jsonl"},
    }
    config_path = state / "credbroker.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    token_file = state / "client-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)

    secret = {
        "access_key_id": env["RGW_BROKER_ACCESS_KEY"],
        "secret_access_key": env["RGW_BROKER_SECRET_KEY"],
    }
    subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [
            sys.executable,
            "-m",
            "credbroker.cli",
            "secrets",
            "put",
            "--config",
            str(config_path),
            "credbroker/object-store/service",
        ],
        input=json.dumps(secret),
        text=True,
        check=True,
    )
    print(f"seeded: bucket {BUCKET}, config {config_path}, token file {token_file}")


if __name__ == "__main__":
    main()
