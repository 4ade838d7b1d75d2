from __future__ import annotations

from pathlib import Path

import pytest

from credbroker.cli import main
from credbroker.config import load_settings
from credbroker.errors import ConfigError

TOKEN_HASH = "0123456789abcdef" * 4  # any 64 hex digits but a placeholder (check-config)

VALID = f"""
object_store:
  flavor: rgw
  endpoint: http://127.0.0.1:7480
  role_arn: arn:aws:iam:::role/credbroker-vend
spaces:
  ENG: {{bucket: confluence-exports, prefix: ENG/}}
clients:
  - id: eng-rule
    token_sha256: {TOKEN_HASH}
    spaces: [ENG]
    max_access: write
secret_store:
  kind: embedded
  path: state/secrets.sealed
  key_file: state/seal.key
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "credbroker.yaml"
    path.write_text(text)
    return path


def test_valid_config_loads_and_resolves_paths_next_to_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, VALID))
    assert settings.spaces["ENG"].prefix == "ENG/"
    assert settings.secret_store.kind == "embedded"
    assert settings.secret_store.path == tmp_path / "state/secrets.sealed"
    assert settings.clients[0].to_client().max_access.value == "write"


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (("  role_arn: arn:aws:iam:::role/credbroker-vend\n", ""), "object_store", "role_arn"),
        (("prefix: ENG/", "prefix: ENG/*"), "spaces.ENG.prefix", "letters, digits"),
        (("prefix: ENG/", "prefix: ../x"), "spaces.ENG.prefix", "'..'"),
        (("bucket: confluence-exports", "bucket: Bad_Bucket"), "spaces.ENG.bucket", "bucket"),
        (("spaces: [ENG]", "spaces: [OPS]"), "(top level)", "unknown spaces: OPS"),
        (("max_access: write", "max_access: admin"), "clients.0.max_access", "read"),
        (
            ("    max_access: write", "    max_access: write\n    extra: 1"),
            "clients.0.extra",
            "Extra",
        ),
        (
            (f"token_sha256: {TOKEN_HASH}", "token_sha256: secret"),
            "clients.0.token_sha256",
            "pattern",
        ),
        (("kind: embedded", "kind: cloud"), "secret_store", "tag"),
        (
            (
                "  role_arn: arn:aws:iam:::role/credbroker-vend\n",
                "  role_arn: x\n  ttl: {maxx: 1}\n",
            ),
            "object_store.ttl.maxx",
            "Unexpected",
        ),
        (
            (
                "  role_arn: arn:aws:iam:::role/credbroker-vend\n",
                "  role_arn: x\n  ttl: {min_seconds: 60}\n",
            ),
            "object_store.ttl",
            "min_seconds",
        ),
        (
            (
                "  role_arn: arn:aws:iam:::role/credbroker-vend\n",
                "  role_arn: x\n  ttl: {min_seconds: 7200, default_seconds: 7200,"
                " max_seconds: 7200}\n",
            ),
            "(top level)",
            "max_ttl_seconds is below object_store.ttl.min_seconds",
        ),
        (
            ("ENG: {bucket: confluence-exports, prefix: ENG/}", "ENG: {bucket: b, prefx: ENG/}"),
            "spaces.ENG.prefx",
            "Unexpected",
        ),
    ],
)
def test_invalid_config_names_the_field_and_reason(
    tmp_path: Path, change: tuple[str, str], field: str, reason: str
) -> None:
    path = write(tmp_path, VALID.replace(*change))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = info.value.message
    assert field in message and reason in message, message


def test_a_space_whose_policy_cannot_fit_is_refused(tmp_path: Path) -> None:
    # Every request prefix must fit under the space's; 9 x 61 characters leave no room.
    long_prefix = "/".join(["p" * 60] * 9)
    path = write(tmp_path, VALID.replace("prefix: ENG/", f"prefix: {long_prefix}/"))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "spaces" in info.value.message


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, VALID)
    assert main(["check-config", str(good)]) == 0
    assert "space ENG: s3://confluence-exports/ENG/" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("max_access: write", "max_access: root"))
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "clients.0.max_access" in err


def test_vault_config_takes_secret_references_not_secrets(tmp_path: Path) -> None:
    text = VALID.replace(
        "secret_store:\n  kind: embedded\n  path: state/secrets.sealed\n  key_file: state/seal.key",
        "secret_store:\n  kind: vault\n  url: https://vault.example:8200\n"
        "  auth: {method: approle, role_id: {env: ROLE_ID}, secret_id: {file: sid}}",
    )
    settings = load_settings(write(tmp_path, text))
    assert settings.secret_store.kind == "vault"
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, text.replace("{env: ROLE_ID}", "{env: A, file: b}")))
