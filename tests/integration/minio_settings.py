"""Settings for a broker on the MinIO admin/STS double with the Vault double as its store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from credbroker.config import Settings
from tests.doubles.minio_admin import MinioAdminDouble
from tests.doubles.vault import VaultDouble


def minio_rotation_settings(
    minio: MinioAdminDouble, vault: VaultDouble, tmp_path: Path, credential: dict[str, Any]
) -> Settings:
    """One managed `credential` (name, secret_path, driver, schedule, verify), 0.5 s grace."""
    (tmp_path / "token").write_text("rotation-token")
    return Settings.model_validate(
        {
            "secret_store": {
                "kind": "vault",
                "url": vault.url,
                "auth": {"method": "token", "token": {"file": str(tmp_path / "token")}},
            },
            "secret_cache_seconds": 0,
            "object_store": {
                "flavor": "minio",
                "endpoint": minio.endpoint,
                "region": minio.region,
            },
            "spaces": {"ENG": {"bucket": "confluence-exports", "prefix": "ENG/"}},
            "audit": {"path": None},
            "rotation": {
                "credentials": [{"grace_seconds": 0.5, **credential}],
                "verify_timeout_seconds": 5,
            },
            "state": {"kind": "sqlite", "path": str(tmp_path / "state.sqlite3")},
        }
    )
