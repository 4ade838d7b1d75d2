"""What the benchmark seeds: one bucket and space, one client, the broker's key in the store."""

from __future__ import annotations

import os
from pathlib import Path

from credbroker.callers.tokens import new_token
from credbroker.domain import Access
from support.rgw_server import RgwServer, admin_s3
from support.seeding import (
    SEAL_KEY_FILE,
    SERVICE_PATH,
    broker_config,
    ensure_bucket,
    put_secret,
    write_config,
    write_key_file,
)

BUCKET = "cb-bench"
SPACE = "ENG"
SPACE_PREFIX = "ENG/"
ACCESS = Access.READ
TTL_SECONDS = 900  # the config's default_seconds: what a request without ttl_seconds gets
SECRET_CACHE_SECONDS = 5.0  # as config/credbroker.embedded.yaml ships
_UNSET_KEY_ENV = "CREDBROKER_BENCH_UNSET_KEY"  # the sealing key comes from its file


def seed(server: RgwServer, state: Path) -> tuple[Path, str]:
    """Bucket, sealing key, config and client token; the broker's key in the sealed store."""
    s3 = admin_s3(server)
    try:
        ensure_bucket(s3, BUCKET)  # a reused RGW may have it already
    finally:
        s3.close()
    write_key_file(state / SEAL_KEY_FILE)
    token, digest = new_token()
    config = broker_config(
        server,
        port=0,
        key_env=_UNSET_KEY_ENV,
        spaces={SPACE: (BUCKET, SPACE_PREFIX)},
        clients=[
            {
                "id": "bench-rule",
                "token_sha256": digest,
                "spaces": [SPACE],
                "max_access": "write",
                "max_ttl_seconds": 3600,
                # The benchmark measures the vend path, not fair use: a limit it never meets
                # (the token bucket's check is still on the path and in the figures).
                "rate_per_second": 1_000_000,
                "burst": 1_000_000,
            }
        ],
        default_ttl_seconds=TTL_SECONDS,
    )
    config["secret_cache_seconds"] = SECRET_CACHE_SECONDS
    config_path = write_config(state, config)
    put_secret(
        config_path,
        SERVICE_PATH,
        server.broker_access_key,
        server.broker_secret_key,
        env={k: v for k, v in os.environ.items() if k != _UNSET_KEY_ENV},
        quiet=True,
    )
    return config_path, token
