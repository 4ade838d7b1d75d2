"""Every configuration file shipped in config/ validates, so the examples can never rot.

Validation must not need the environment: secret references ({env: ...}, {file: ...}) and the
sealing key are only resolved when the broker starts, never by load_settings or check-config.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from credbroker.callers.tokens import new_token
from credbroker.cli import main
from credbroker.config import load_settings

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))
# Files that must exist, and whose client token hashes must stay obviously fake.
EXAMPLES = (
    "credbroker.example.yaml",
    "credbroker.embedded.yaml",
    "credbroker.cyberark.yaml",
    "credbroker.datacenter.yaml",
)


@pytest.fixture(autouse=True)
def _bare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Vault token, AppRole ids or sealing key in the environment while validating."""
    for name in list(os.environ):
        if name.startswith(("VAULT_", "CREDBROKER_")):
            monkeypatch.delenv(name)


def test_the_examples_are_shipped() -> None:
    assert set(EXAMPLES) <= {path.name for path in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_shipped_config_validates(path: Path) -> None:
    settings = load_settings(path)
    assert settings.spaces
    for client in settings.clients:
        assert set(client.spaces) <= set(settings.spaces)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_check_config_accepts_it_but_for_placeholder_hashes(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not load_settings(path).clients:
        assert main(["check-config", str(path)]) == 0
        assert f"{path}: ok" in capsys.readouterr().out
        return
    # The examples' hashes are placeholders: check-config says so, naming the clients.
    assert main(["check-config", str(path)]) == 2
    out = capsys.readouterr()
    assert "is a placeholder" in out.err and f"{path}: ok" not in out.out


def test_check_config_refuses_placeholder_hashes_and_accepts_real_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = (CONFIG_DIR / "credbroker.example.yaml").read_text()
    fixed = example
    for digit in "ab":
        _, real = new_token()
        fixed = fixed.replace(digit * 64, real)
    for name, text, expected in (("placeholder", example, 2), ("real", fixed, 0)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        assert main(["check-config", str(path)]) == expected, capsys.readouterr()
    nearly = fixed.replace(real, "ab" * 32)  # two digits repeated is a placeholder too
    (tmp_path / "nearly.yaml").write_text(nearly)
    assert main(["check-config", str(tmp_path / "nearly.yaml")]) == 2


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_token_hashes_are_placeholders(name: str) -> None:
    settings = load_settings(CONFIG_DIR / name)
    assert settings.clients
    for client in settings.clients:
        # One repeated hex digit: nobody mistakes it for a real token's hash.
        assert len(set(client.token_sha256)) == 1, client.id


def test_the_production_example_serves_https_and_checks_identities(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = CONFIG_DIR / "credbroker.example.yaml"
    settings = load_settings(path)
    assert settings.server.tls is not None and settings.server.tls.min_version == "1.2"
    assert settings.oidc is not None and "HS256" not in settings.oidc.algorithms
    assert any(space.actor_check == "confluence" for space in settings.spaces.values())
    # check-config refuses the example's placeholder token hashes (tested above); what it
    # prints about TLS, OIDC and actor checks is what this test reads.
    monkeypatch.setattr("credbroker.cli.placeholder_token_hashes", lambda settings: [])
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "https: TLS 1.2+" in out and "oidc: https://" in out
    assert "actor checked in LEGAL" in out


def test_the_data_center_example_checks_actors_on_data_center(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = CONFIG_DIR / "credbroker.datacenter.yaml"
    settings = load_settings(path)
    assert settings.confluence is not None
    assert (settings.confluence.deployment, settings.confluence.auth) == ("datacenter", "bearer")
    assert settings.spaces["ENG"].actor_check == "confluence"
    monkeypatch.setattr("credbroker.cli.placeholder_token_hashes", lambda settings: [])
    assert main(["check-config", str(path)]) == 0
    assert "(datacenter); actor checked in ENG" in capsys.readouterr().out
