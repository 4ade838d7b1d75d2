"""The read-only identity's own key creates no bucket and writes nothing, on the real RGW.

The read-only fallback's parent user (vendor/rgw/setup.sh, and scripts/rgw-dev.sh for the test
harness) gets ``--max-buckets=-1``. Measured on Ceph 16.2.15: -1 refuses CreateBucket with
403 AccessDenied; 0 means *unlimited* (the user then creates a bucket and writes into it). The
user owns no bucket, so its key has nowhere to write: objects in buckets it does not own are
refused by the bucket's ACL. Its role session (the fallback's reads) keeps working.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from credbroker.domain import AccessKey
from support.rgw_server import REPO_ROOT, RgwServer, botocore_client, create_bucket

pytestmark = pytest.mark.rgw

SETUP = REPO_ROOT / "vendor" / "rgw" / "setup.sh"


def s3_error(call: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], str(response["Error"]["Code"])


@pytest.fixture(scope="module")
def bucket(rgw: RgwServer, s3_admin: Any) -> str:
    """An admin-owned bucket, set up as credbroker expects, holding one object."""
    name = f"ro-{uuid.uuid4().hex[:12]}"
    create_bucket(s3_admin, rgw, name)
    s3_admin.put_object(Bucket=name, Key="kept.txt", Body=b"kept")
    return name


def admin_command(rgw: RgwServer) -> list[str]:
    """radosgw-admin for this RGW's cluster (next to the running radosgw)."""
    conf = rgw.dir / "ceph.conf"
    if shutil.which("radosgw-admin") is None or not conf.exists():
        pytest.skip("radosgw-admin or this RGW's ceph.conf is not on this machine")
    return ["radosgw-admin", "-c", str(conf), "-n", "client.rgw", "--admin-socket="]


def max_buckets(admin: list[str], uid: str) -> int:
    out = subprocess.run(
        [*admin, "user", "info", f"--uid={uid}"], capture_output=True, text=True, check=True
    ).stdout
    return int(json.loads(out)["max_buckets"])


def assert_creates_and_writes_nothing(rgw: RgwServer, key: AccessKey, bucket: str) -> None:
    s3 = botocore_client(rgw, "s3", key.access_key_id, key.secret_access_key)
    try:
        new = f"ro-own-{uuid.uuid4().hex[:10]}"
        assert s3_error(s3.create_bucket, Bucket=new) == (403, "AccessDenied")
        assert s3_error(s3.head_bucket, Bucket=new)[0] == 404  # nothing was created
        assert s3_error(s3.put_object, Bucket=bucket, Key="ro.txt", Body=b"x") == (
            403,
            "AccessDenied",
        )
        assert s3.list_buckets()["Buckets"] == []  # it owns no bucket to write into
    finally:
        s3.close()


def assert_role_reads(rgw: RgwServer, key: AccessKey, role_arn: str, bucket: str) -> None:
    """The fallback's path still works: AssumeRole on the read role, then a read."""
    sts = botocore_client(rgw, "sts", key.access_key_id, key.secret_access_key)
    try:
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="ro-test")["Credentials"]
    finally:
        sts.close()
    s3 = botocore_client(
        rgw, "s3", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
    )
    try:
        assert s3.get_object(Bucket=bucket, Key="kept.txt")["Body"].read() == b"kept"
    finally:
        s3.close()


def test_harness_readonly_key_creates_no_bucket_and_writes_nothing(
    rgw: RgwServer, bucket: str
) -> None:
    key = AccessKey(rgw.readonly_access_key, rgw.readonly_secret_key)
    assert_creates_and_writes_nothing(rgw, key, bucket)
    assert_role_reads(rgw, key, rgw.read_role_arn, bucket)


@dataclass(frozen=True)
class Kit:
    """What one run of vendor/rgw/setup.sh made: names, the read-only key, the read role."""

    admin: list[str]
    env: dict[str, str]
    out_dir: Path
    ro_uid: str

    def run(self) -> str:
        proc = subprocess.run(
            ["bash", str(SETUP)], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def ro_key(self) -> AccessKey:
        data = json.loads((self.out_dir / f"{self.ro_uid}.json").read_text())
        return AccessKey(data["access_key_id"], data["secret_access_key"])


@pytest.fixture
def kit(rgw: RgwServer, bucket: str, tmp_path: Path) -> Iterator[Kit]:
    admin = admin_command(rgw)
    tag = uuid.uuid4().hex[:8]
    names = {
        "BROKER_UID": f"kitb-{tag}",
        "RO_UID": f"kitro-{tag}",
        "VEND_ROLE": f"kitv-{tag}",
        "READ_ROLE": f"kitr-{tag}",
    }
    env = {
        **os.environ,
        **names,
        "BUCKETS": bucket,
        "OUT_DIR": str(tmp_path / "keys"),
        "RGW_ADMIN_ARGS": " ".join(admin[1:]),
    }
    made = Kit(admin, env, tmp_path / "keys", names["RO_UID"])
    try:
        yield made
    finally:
        for role, policy in (
            (names["VEND_ROLE"], "credbroker-vend"),
            (names["READ_ROLE"], "credbroker-read"),
        ):
            subprocess.run(
                [*admin, "role-policy", "delete", f"--role-name={role}", f"--policy-name={policy}"],
                capture_output=True,
            )
            subprocess.run([*admin, "role", "delete", f"--role-name={role}"], capture_output=True)
        for uid in (names["BROKER_UID"], names["RO_UID"]):
            subprocess.run(
                [*admin, "user", "rm", f"--uid={uid}", "--purge-data"], capture_output=True
            )


def test_setup_sh_readonly_key_creates_no_bucket_and_writes_nothing(
    rgw: RgwServer, bucket: str, kit: Kit
) -> None:
    out = kit.run()
    assert f"user {kit.ro_uid}: max-buckets -1" in out
    assert max_buckets(kit.admin, kit.ro_uid) == -1
    key = kit.ro_key()
    assert_creates_and_writes_nothing(rgw, key, bucket)
    assert_role_reads(rgw, key, f"arn:aws:iam:::role/{kit.env['READ_ROLE']}", bucket)


def test_setup_sh_limits_a_readonly_user_an_earlier_run_made(
    rgw: RgwServer, bucket: str, kit: Kit
) -> None:
    """A user made before the limit existed (RGW default: 1000 buckets) is limited on re-run."""
    ak, sk = f"KITRO{uuid.uuid4().hex[:15].upper()}", uuid.uuid4().hex
    subprocess.run(
        [
            *kit.admin,
            "user",
            "create",
            f"--uid={kit.ro_uid}",
            "--display-name=old",
            f"--access-key={ak}",
            f"--secret={sk}",
        ],
        capture_output=True,
        check=True,
    )
    assert max_buckets(kit.admin, kit.ro_uid) == 1000
    out = kit.run()
    assert f"user {kit.ro_uid} exists" in out
    assert max_buckets(kit.admin, kit.ro_uid) == -1
    assert_creates_and_writes_nothing(rgw, AccessKey(ak, sk), bucket)


def test_max_buckets_zero_means_unlimited_on_rgw_16(rgw: RgwServer) -> None:
    """Why -1 and not 0: pinned, so a Ceph upgrade that changes it is noticed."""
    admin = admin_command(rgw)
    uid = f"kitzero-{uuid.uuid4().hex[:8]}"
    ak, sk = f"KITZ{uuid.uuid4().hex[:16].upper()}", uuid.uuid4().hex
    subprocess.run(
        [
            *admin,
            "user",
            "create",
            f"--uid={uid}",
            "--display-name=zero",
            f"--access-key={ak}",
            f"--secret={sk}",
            "--max-buckets=0",
        ],
        capture_output=True,
        check=True,
    )
    s3 = botocore_client(rgw, "s3", ak, sk)
    try:
        name = f"zero-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="x", Body=b"x")
    finally:
        s3.close()
        subprocess.run([*admin, "user", "rm", f"--uid={uid}", "--purge-data"], capture_output=True)
