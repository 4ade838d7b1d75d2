"""The `rotation:` and `state:` sections: what loads, and each refusal with its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from credbroker import wiring
from credbroker.cli import main
from credbroker.config import PostgresStateConfig, SqliteStateConfig, load_settings
from credbroker.errors import ConfigError
from credbroker.rotation.schedule import Schedule
from tests.fakes import MemorySecretStore

BASE: dict[str, Any] = {
    "secret_cache_seconds": 5,
    "object_store": {
        "flavor": "rgw",
        "endpoint": "http://127.0.0.1:7480",
        "role_arn": "arn:aws:iam:::role/credbroker-vend",
    },
    "spaces": {"ENG": {"bucket": "confluence-exports", "prefix": "ENG/"}},
}
SERVICE: dict[str, Any] = {
    "name": "service",
    "secret_path": "credbroker/object-store/service",
    "driver": {
        "kind": "rgw",
        "user": "credbroker-broker",
        "admin_credentials_path": "credbroker/object-store/rgw-admin",
    },
    "schedule": {"interval_seconds": 2592000},
    "grace_seconds": 3600,
}


def write(tmp_path: Path, **sections: Any) -> Path:
    path = tmp_path / "credbroker.yaml"
    path.write_text(yaml.safe_dump({**BASE, **sections}))
    return path


def with_service(**changes: Any) -> dict[str, Any]:
    return {"credentials": [{**SERVICE, **changes}]}


def test_rotation_and_sqlite_state_load_with_paths_next_to_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, rotation=with_service()))

    [credential] = settings.rotation.credentials
    assert credential.schedule.to_schedule() == Schedule(interval_seconds=2592000)
    assert credential.verify == "sts" and credential.enabled
    assert isinstance(settings.state, SqliteStateConfig)
    assert settings.state.path == tmp_path / "var/rotation-state.sqlite3"
    assert settings.rotation.scheduler is True


def test_postgres_state_takes_a_dsn_reference_never_the_dsn(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            rotation=with_service(),
            state={"kind": "postgres", "dsn": {"env": "CREDBROKER_STATE_DSN"}},
        )
    )
    assert isinstance(settings.state, PostgresStateConfig)
    assert settings.state.dsn.env == "CREDBROKER_STATE_DSN"
    assert settings.state.schema_name == "credbroker"


def test_no_rotation_section_means_nothing_is_managed(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path)).rotation.credentials == []


@pytest.mark.parametrize(
    ("sections", "reason"),
    [
        ({"rotation": with_service(schedule={})}, "exactly one of interval_seconds or cron"),
        (
            {"rotation": with_service(schedule={"interval_seconds": 3600, "cron": "0 3 * * *"})},
            "exactly one",
        ),
        ({"rotation": with_service(schedule={"cron": "0 3 * *"})}, "5 fields"),
        ({"rotation": with_service(schedule={"cron": "0 3 * * 1-5/2"})}, "weekday"),
        ({"rotation": with_service(schedule={"interval_seconds": 10})}, "greater than or equal"),
        ({"rotation": with_service(grace_seconds=5)}, "exceed secret_cache_seconds"),
        ({"rotation": with_service(name="Bad Name")}, "pattern"),
        (
            {"rotation": with_service(driver={**SERVICE["driver"], "kind": "minio"})},
            "does not match object_store.flavor",
        ),
        (
            {
                "rotation": with_service(
                    driver={**SERVICE["driver"], "admin_credentials_path": SERVICE["secret_path"]}
                )
            },
            "must differ",
        ),
        ({"rotation": {"credentials": [SERVICE, SERVICE]}}, "each name may appear once"),
        ({"rotation": with_service(verify="maybe")}, "'sts' or 's3'"),
        ({"rotation": with_service(), "state": {"kind": "postgres"}}, "dsn"),
        (
            {
                "rotation": with_service(),
                "state": {"kind": "postgres", "dsn": {"env": "X"}, "schema_name": "a;drop"},
            },
            "pattern",
        ),
        ({"rotation": with_service(surprise=1)}, "Extra inputs"),
    ],
)
def test_refusals_name_the_reason(tmp_path: Path, sections: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, **sections))
    assert reason in info.value.message


def test_minio_access_keys_cannot_be_verified_with_sts(tmp_path: Path) -> None:
    minio = {**BASE["object_store"], "flavor": "minio"}
    driver = {**SERVICE["driver"], "kind": "minio"}
    with pytest.raises(ConfigError, match="MinIO refuses AssumeRole"):
        load_settings(write(tmp_path, object_store=minio, rotation=with_service(driver=driver)))
    settings = load_settings(
        write(tmp_path, object_store=minio, rotation=with_service(driver=driver, verify="s3"))
    )
    assert settings.rotation.credentials[0].verify == "s3"


def test_the_fallback_keys_need_a_grace_longer_than_the_sealed_copy_lives(tmp_path: Path) -> None:
    fallback = {
        "credentials_path": "credbroker/object-store/read-only",
        "role_arn": "arn:aws:iam:::role/credbroker-read",
        "key_file": "fallback.key",
        "refresh_seconds": 600,
    }
    read_only = {
        **SERVICE,
        "name": "read-only",
        "secret_path": "credbroker/object-store/read-only",
        "grace_seconds": 300,
    }
    with pytest.raises(ConfigError, match=r"fallback\.refresh_seconds"):
        load_settings(write(tmp_path, fallback=fallback, rotation={"credentials": [read_only]}))
    read_only["grace_seconds"] = 900
    load_settings(write(tmp_path, fallback=fallback, rotation={"credentials": [read_only]}))


def test_check_config_shows_the_rotation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, rotation=with_service(schedule={"cron": "0 3 * * 1"}))
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rotation service: credbroker/object-store/service (rgw user credbroker-broker)" in out
    assert "cron '0 3 * * 1' (UTC), grace 3600 s" in out
    assert "rotation state: sqlite" in out


def test_rotate_without_managed_credentials_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rotate", "--config", str(write(tmp_path))]) == 2
    assert "no rotation.credentials" in capsys.readouterr().err


PAIR_DRIVER: dict[str, Any] = {
    "kind": "minio-users",
    "users": ["credbroker-a", "credbroker-b"],
    "admin_credentials_path": "credbroker/object-store/minio-rotator",
}


def test_minio_sts_parent_rotates_with_the_user_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    minio = {**BASE["object_store"], "flavor": "minio"}
    path = write(tmp_path, object_store=minio, rotation=with_service(driver=PAIR_DRIVER))
    [credential] = load_settings(path).rotation.credentials
    assert credential.verify == "sts"
    settings = load_settings(path)
    driver = wiring.build_key_driver(settings, credential, MemorySecretStore())
    assert driver.owner == "credbroker-a+credbroker-b"  # computed once, by the driver
    assert wiring.managed_credential(settings, credential, driver).user == driver.owner
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "credbroker-a" in out and "credbroker-b" in out


@pytest.mark.parametrize(
    ("driver", "reason"),
    [
        ({**PAIR_DRIVER, "users": ["credbroker-a"]}, "two different user names"),
        ({**PAIR_DRIVER, "users": ["credbroker-a", "credbroker-a"]}, "two different user names"),
        ({**PAIR_DRIVER, "user": "credbroker-a"}, "two different user names"),
        ({**SERVICE["driver"], "kind": "minio", "users": ["a", "b"]}, "needs `user`"),
    ],
)
def test_the_pair_driver_needs_exactly_two_users(
    tmp_path: Path, driver: dict[str, Any], reason: str
) -> None:
    minio = {**BASE["object_store"], "flavor": "minio"}
    with pytest.raises(ConfigError, match=reason):
        load_settings(write(tmp_path, object_store=minio, rotation=with_service(driver=driver)))


def test_the_pair_driver_is_for_minio_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not match object_store\.flavor rgw"):
        load_settings(write(tmp_path, rotation=with_service(driver=PAIR_DRIVER)))
