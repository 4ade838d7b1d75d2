"""A throw-away RGW identity for rotation tests: a user of its own and a role that trusts it.

Rotation deletes keys, so these tests never touch the shared credbroker-broker user. The
admin user (caps users=*;roles=*) creates the user through the admin ops API (rgwadmin) and
the role through RGW's IAM API, with the same trust and permission shape as
scripts/rgw-dev.sh gives credbroker-vend. `remove()` deletes the user (and its keys) and role.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rgwadmin.rgw import RGWAdmin

from credbroker.domain import AccessKey
from support.rgw_server import RgwServer, botocore_client

_RGWAdmin: Any = RGWAdmin  # rgwadmin ships py.typed but leaves its methods untyped


def rgw_admin(rgw: RgwServer) -> Any:
    """An RGWAdmin without a pooled session: each call opens and closes its own."""
    return _RGWAdmin(
        access_key=rgw.admin_access_key,
        secret_key=rgw.admin_secret_key,
        server=rgw.endpoint.split("://", 1)[1],
        secure=False,
        timeout=10,
    )


@dataclass(frozen=True)
class Identity:
    rgw: RgwServer
    uid: str
    role_arn: str
    initial: AccessKey

    @property
    def admin_key(self) -> AccessKey:
        return AccessKey(self.rgw.admin_access_key, self.rgw.admin_secret_key)

    def broker_seed(self, service_path: str, admin_path: str) -> dict[str, dict[str, str]]:
        """What the broker's secret store holds: this user's first key and the RGW admin's."""
        return {
            service_path: self.initial.as_secret_data(),
            admin_path: self.admin_key.as_secret_data(),
        }

    def rotation_overrides(
        self, service_path: str, admin_path: str, state_dir: Path, *, grace: float
    ) -> dict[str, Any]:
        """Broker settings (start_broker overrides) that vend for and rotate this user's key."""
        return {
            "object_store": {
                "flavor": "rgw",
                "endpoint": self.rgw.endpoint,
                "region": self.rgw.region,
                "role_arn": self.role_arn,
                "credentials_path": service_path,
            },
            "rotation": {
                "credentials": [
                    {
                        "name": "service",
                        "secret_path": service_path,
                        "driver": {
                            "kind": "rgw",
                            "user": self.uid,
                            "admin_credentials_path": admin_path,
                        },
                        "schedule": {"interval_seconds": 86400},
                        "grace_seconds": grace,
                    }
                ],
                "verify_timeout_seconds": 10,
            },
            "state": {"kind": "sqlite", "path": str(state_dir / "rotation.sqlite3")},
        }

    def access_keys(self) -> list[str]:
        """The user's access keys as RGW lists them (the admin ops API, no cache)."""
        info = rgw_admin(self.rgw).get_user(uid=self.uid)
        return sorted(k["access_key"] for k in info["keys"] if k["user"] == self.uid)

    def remove(self) -> None:
        rgw_admin(self.rgw).remove_user(uid=self.uid, purge_data=True)
        iam = botocore_client(self.rgw, "iam", self.rgw.admin_access_key, self.rgw.admin_secret_key)
        try:
            name = self.role_arn.rsplit("/", 1)[1]
            iam.delete_role_policy(RoleName=name, PolicyName="s3-all")
            iam.delete_role(RoleName=name)
        finally:
            iam.close()


def create_identity(rgw: RgwServer, prefix: str = "cbrot") -> Identity:
    uid = f"{prefix}-{uuid.uuid4().hex[:10]}"
    user = rgw_admin(rgw).create_user(uid=uid, display_name=uid, generate_key=True)
    key = user["keys"][0]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam:::user/{uid}"]},
                "Action": ["sts:AssumeRole"],
            }
        ],
    }
    permission = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}],
    }
    iam = botocore_client(rgw, "iam", rgw.admin_access_key, rgw.admin_secret_key)
    try:
        role = iam.create_role(
            RoleName=uid,
            Path="/",
            AssumeRolePolicyDocument=json.dumps(trust, separators=(",", ":")),
        )
        iam.put_role_policy(
            RoleName=uid,
            PolicyName="s3-all",
            PolicyDocument=json.dumps(permission, separators=(",", ":")),
        )
    finally:
        iam.close()
    return Identity(
        rgw,
        uid,
        role["Role"]["Arn"],
        AccessKey(key["access_key"], key["secret_key"]),
    )
