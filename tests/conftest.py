"""Suite-wide fixtures. Keep each one small; helpers live in modules next to this file.

rgw       one real Ceph RADOS Gateway for the whole session (tests/rgw_server.py,
          scripts/rgw-dev.sh), on free loopback ports in a tmp dir, stopped at the end. Set
          CREDBROKER_TEST_RGW_ENV=DIR/env to reuse a running one instead. If it cannot start,
          every test that needs it fails with the reason: never a silent skip.
s3_admin  botocore S3 client with the RGW admin user's keys (owns the test buckets).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.rgw_server import (
    RgwServer,
    RgwStartError,
    admin_s3,
    free_ports,
    reuse_from_environment,
    start_rgw,
    stop_rgw,
)


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RgwServer]:
    try:
        server = reuse_from_environment()
        if server is None:
            rgw_port, mon_port = free_ports(2)
            server = start_rgw(tmp_path_factory.mktemp("rgw"), rgw_port, mon_port)
    except RgwStartError as exc:
        raise pytest.fail.Exception(f"Ceph RGW did not start:\n{exc}", pytrace=False) from None
    try:
        yield server
    finally:
        stop_rgw(server)


@pytest.fixture(scope="session")
def s3_admin(rgw: RgwServer) -> Iterator[Any]:
    client = admin_s3(rgw)
    try:
        yield client
    finally:
        client.close()
