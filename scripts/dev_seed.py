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
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python scripts/dev_seed.py` puts scripts/ first, not the root
    sys.path.insert(0, str(REPO_ROOT))

from credbroker.audit.chain import generate_private_pem  # noqa: E402
from credbroker.callers.tokens import new_token  # noqa: E402
from support.rgw_server import admin_s3, server_from_env  # noqa: E402
from support.seeding import (  # noqa: E402
    SERVICE_PATH,
    broker_config,
    ensure_bucket,
    put_secret,
    write_config,
    write_key_file,
)

BUCKET = "confluence-exports"
FALLBACK_PATH = "credbroker/object-store/read-only"
RGW_ADMIN_PATH = "credbroker/object-store/rgw-admin"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    state: Path = args.dir.resolve()
    server = server_from_env(os.environ)  # what `rgw-dev.sh env` exported

    s3 = admin_s3(server)
    try:
        ensure_bucket(s3, BUCKET)  # the RGW is new on every `up`
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
    finally:
        s3.close()

    for name in ("seal.key", "fallback.key"):
        write_key_file(state / name, keep_existing=True)
    for stale in ("secrets.sealed", "fallback.sealed", "rotation-state.sqlite3"):
        (state / stale).unlink(missing_ok=True)

    token, digest = new_token()
    admin_token, admin_digest = new_token()
    config = broker_config(
        server,
        port=args.port,
        key_env="CREDBROKER_SEAL_KEY",
        spaces={"ENG": (BUCKET, "ENG/"), "OPS": (BUCKET, "OPS/")},
        clients=[
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
    )
    config["fallback"] = {
        "credentials_path": FALLBACK_PATH,
        "role_arn": server.read_role_arn,
        "cache_file": "fallback.sealed",
        "key_file": "fallback.key",
        "refresh_seconds": 60,
        "max_staleness_seconds": 86400,
    }
    config["rotation"] = {
        "credentials": [
            {
                "name": "service",
                "secret_path": SERVICE_PATH,
                "driver": {
                    "kind": "rgw",
                    "user": server.broker_uid,
                    "admin_credentials_path": RGW_ADMIN_PATH,
                },
                "schedule": {"interval_seconds": 86400},
                "grace_seconds": 60,
            }
        ]
    }
    config["state"] = {"kind": "sqlite", "path": "rotation-state.sqlite3"}
    # The audit chain's checkpoints are signed (README "Audit trail"); the compliance check
    # reads bucket settings with the RGW admin key (`credbroker compliance check`).
    signing = state / "audit-signing.pem"
    if not signing.exists():
        signing.touch(0o600)
        signing.write_bytes(generate_private_pem())
    config["audit"] = {"path": "audit.jsonl", "signing_key_file": "audit-signing.pem"}
    config["compliance"] = {"report_dir": "compliance", "inspect_credentials_path": RGW_ADMIN_PATH}
    config_path = write_config(state, config)
    for name, value in (("client-token", token), ("admin-token", admin_token)):
        token_file = state / name
        token_file.write_text(value + "\n")
        token_file.chmod(0o600)

    seeds = {
        SERVICE_PATH: (server.broker_access_key, server.broker_secret_key),
        FALLBACK_PATH: (server.readonly_access_key, server.readonly_secret_key),
        RGW_ADMIN_PATH: (server.admin_access_key, server.admin_secret_key),
    }
    for path, (access_key, secret_key) in seeds.items():
        put_secret(config_path, path, access_key, secret_key)
    print(f"seeded: bucket {BUCKET}, config {config_path}, tokens client-token, admin-token")


if __name__ == "__main__":
    main()
