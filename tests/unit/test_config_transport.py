"""Insecure transport is a decision: http or unverified TLS outside loopback needs an opt-in.

Toward Vault (secret_store.url), the object store (object_store.endpoint, public_endpoint) and
a rotation driver's admin API (driver.endpoint). Loopback is 127.0.0.0/8, ::1 and exactly
`localhost`; a name that merely starts like one is not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from credbroker.cli import main
from credbroker.config import Settings, is_loopback_url, load_settings
from credbroker.errors import ConfigError

SECURE: dict[str, Any] = {
    "object_store": {
        "flavor": "rgw",
        "endpoint": "https://s3.example.internal",
        "role_arn": "arn:aws:iam:::role/credbroker-vend",
    },
    "spaces": {"ENG": {"bucket": "confluence-exports", "prefix": "ENG/"}},
}
VAULT = {"kind": "vault", "url": "https://vault.example.internal:8200"}
RGW_DRIVER = {"kind": "rgw", "user": "credbroker-broker", "admin_credentials_path": "rgw/admin"}


def config(**changes: Any) -> dict[str, Any]:
    """SECURE with top-level keys replaced and object_store keys merged."""
    object_store = {**SECURE["object_store"], **changes.pop("object_store", {})}
    return {**SECURE, "object_store": object_store, **changes}


def rotation(endpoint: str) -> dict[str, Any]:
    return {
        "credentials": [
            {
                "name": "service",
                "secret_path": "credbroker/object-store/service",
                "driver": {**RGW_DRIVER, "endpoint": endpoint},
                "schedule": {"interval_seconds": 86400},
            }
        ]
    }


REFUSED = {
    "vault http": (
        config(secret_store={**VAULT, "url": "http://vault.example.internal:8200"}),
        "secret_store.url http://vault.example.internal:8200 (plain http)",
    ),
    "vault unverified": (
        config(secret_store={**VAULT, "verify_tls": False}),
        "secret_store.url https://vault.example.internal:8200 (verify_tls: false)",
    ),
    "object store http": (
        config(object_store={"endpoint": "http://10.0.0.5:7480"}),
        "object_store.endpoint http://10.0.0.5:7480 (plain http)",
    ),
    "object store unverified": (
        config(object_store={"verify_tls": False}),
        "object_store.endpoint https://s3.example.internal (verify_tls: false)",
    ),
    "public endpoint http": (
        config(object_store={"public_endpoint": "http://s3.example.com"}),
        "object_store.public_endpoint http://s3.example.com (plain http)",
    ),
    "driver endpoint http": (
        config(rotation=rotation("http://rgw-admin.example.internal:7480")),
        "rotation service: driver.endpoint http://rgw-admin.example.internal:7480 (plain http)",
    ),
    "driver endpoint unverified": (
        config(
            object_store={"endpoint": "https://127.0.0.1:7480", "verify_tls": False},
            rotation=rotation("https://rgw-admin.example.internal"),
        ),
        "rotation service: driver.endpoint https://rgw-admin.example.internal (verify_tls: false)",
    ),
    "user info never shown": (
        config(object_store={"endpoint": "http://ops:hunter2@127.0.0.1.example.com"}),
        "object_store.endpoint http://127.0.0.1.example.com (plain http)",
    ),
}


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "credbroker.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("data", "target"), REFUSED.values(), ids=REFUSED.keys())
def test_insecure_transport_outside_loopback_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: dict[str, Any], target: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, data))
    assert target in info.value.message
    assert "allow_insecure_transport: true" in info.value.message
    assert "hunter2" not in info.value.message
    # check-config says no, naming the target.
    assert main(["check-config", str(tmp_path / "credbroker.yaml")]) == 2
    err = capsys.readouterr().err
    assert target in err
    assert "hunter2" not in err


@pytest.mark.parametrize(("data", "target"), REFUSED.values(), ids=REFUSED.keys())
def test_opt_in_accepts_it_and_check_config_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: dict[str, Any], target: str
) -> None:
    settings = Settings.model_validate({**data, "allow_insecure_transport": True})
    assert settings.insecure_transport() == [target]
    path = write(tmp_path, {**data, "allow_insecure_transport": True})
    assert main(["check-config", str(path)]) == 0
    assert f"insecure transport (allow_insecure_transport: true): {target}" in (
        capsys.readouterr().out
    )


def test_serve_warns_once_per_insecure_target_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = config(
        secret_store={**VAULT, "url": "http://vault.example.internal:8200", "verify_tls": False},
        object_store={"endpoint": "https://s3.example.internal", "verify_tls": False},
        allow_insecure_transport=True,
    )
    started: list[object] = []
    monkeypatch.setattr("credbroker.web.app.create_app", lambda settings: settings)
    monkeypatch.setattr("credbroker.web.server.run", lambda app, **kwargs: started.append(app))
    with caplog.at_level(logging.WARNING, logger="credbroker.cli"):
        assert main(["serve", "--config", str(write(tmp_path, data))]) == 0
    assert len(started) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "insecure transport (allow_insecure_transport: true): "
        "secret_store.url http://vault.example.internal:8200 (plain http)",
        "insecure transport (allow_insecure_transport: true): "
        "object_store.endpoint https://s3.example.internal (verify_tls: false)",
    ]


def test_serve_is_silent_when_transport_is_secure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("credbroker.web.app.create_app", lambda settings: settings)
    monkeypatch.setattr("credbroker.web.server.run", lambda app, **kwargs: None)
    data = config(secret_store=VAULT, allow_insecure_transport=True)
    with caplog.at_level(logging.WARNING, logger="credbroker.cli"):
        assert main(["serve", "--config", str(write(tmp_path, data))]) == 0
    assert not [r for r in caplog.records if "insecure" in r.getMessage()]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8200",
        "http://127.8.9.10",
        "http://localhost:7480",
        "http://LOCALHOST:7480",
        "http://[::1]:7480",
    ],
)
def test_loopback_may_use_http_and_unverified_tls(url: str) -> None:
    assert is_loopback_url(url)
    settings = Settings.model_validate(
        config(
            secret_store={**VAULT, "url": url, "verify_tls": False},
            object_store={"endpoint": url, "public_endpoint": url, "verify_tls": False},
            rotation=rotation(url),
        )
    )
    assert settings.insecure_transport() == []
    assert not settings.allow_insecure_transport


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1.example.com",
        "http://localhost.evil",
        "http://localhost.evil:7480",
        "http://evil-localhost",
        "http://128.0.0.1",
        "http://0.0.0.0:7480",
        "http://[::2]",
        "http://[::ffff:10.0.0.1]",
        "http://2130706433",  # 127.0.0.1 as one number: some clients would resolve it
        "http://0177.0.0.1",  # octal
        "http://127.0.0.1@evil.example",  # user info: the host is evil.example
        "http://evil.example\\@127.0.0.1",  # clients disagree on the host
        "http://localhost@127.0.0.1",
    ],
)
def test_names_that_only_look_like_loopback_are_not(url: str) -> None:
    assert not is_loopback_url(url)
    with pytest.raises(ValueError, match="insecure transport outside loopback"):
        Settings.model_validate(config(object_store={"endpoint": url}))


def test_a_vault_ca_file_means_verified(tmp_path: Path) -> None:
    """wiring.py verifies against ca_file when one is given, whatever verify_tls says."""
    settings = Settings.model_validate(
        config(secret_store={**VAULT, "verify_tls": False, "ca_file": str(tmp_path / "ca.pem")})
    )
    assert settings.insecure_transport() == []


def test_https_with_verification_is_fine_without_opt_in() -> None:
    settings = Settings.model_validate(
        config(
            secret_store=VAULT,
            object_store={"public_endpoint": "https://s3.example.com"},
            rotation=rotation("https://rgw-admin.example.internal"),
        )
    )
    assert settings.insecure_transport() == []
