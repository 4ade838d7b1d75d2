"""The `secret_store_resilience:` and `fallback:` sections: defaults, validation, paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from credbroker.config import load_settings
from credbroker.errors import ConfigError
from tests.unit.test_config import VALID, write

FALLBACK = """
fallback:
  credentials_path: credbroker/object-store/read-only
  role_arn: arn:aws:iam:::role/credbroker-read
  cache_file: state/fallback.sealed
  key_file: state/fallback.key
  refresh_seconds: 60
  max_staleness_seconds: 3600
secret_store_resilience:
  timeout_seconds: 1.5
  failure_threshold: 2
"""


def test_without_the_sections_there_is_no_fallback_and_default_resilience(
    tmp_path: Path,
) -> None:
    settings = load_settings(write(tmp_path, VALID))
    assert settings.fallback is None
    resilience = settings.secret_store_resilience
    assert (resilience.timeout_seconds, resilience.attempts) == (3.0, 3)
    assert (resilience.failure_threshold, resilience.open_seconds) == (3, 10.0)


def test_the_fallback_section_loads_with_paths_next_to_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, VALID + FALLBACK))
    assert settings.fallback is not None
    assert settings.fallback.cache_file == tmp_path / "state/fallback.sealed"
    assert settings.fallback.key_file == tmp_path / "state/fallback.key"
    assert settings.fallback.role_arn == "arn:aws:iam:::role/credbroker-read"
    assert settings.secret_store_resilience.timeout_seconds == 1.5
    assert settings.secret_store_resilience.attempts == 3  # untouched fields keep defaults


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("  role_arn: arn:aws:iam:::role/credbroker-read\n", ""), "fallback.role_arn"),
        (
            ("path: credbroker/object-store/read-only", "path: credbroker/object-store/service"),
            "must name a read-only identity",
        ),
        (("max_staleness_seconds: 3600", "max_staleness_seconds: 60"), "larger than refresh"),
        (("refresh_seconds: 60", "refresh_seconds: 0"), "greater than or equal to 1"),
        (("timeout_seconds: 1.5", "timeout_seconds: 0"), "greater than 0"),
        (("failure_threshold: 2", "failure_threshold: 0"), "greater than or equal to 1"),
        (("  key_file: state/fallback.key\n", "  key_file: state/fallback.key\n  x: 1\n"), "Extra"),
    ],
)
def test_bad_fallback_settings_are_refused_with_the_reason(
    tmp_path: Path, change: tuple[str, str], reason: str
) -> None:
    text = VALID + FALLBACK
    assert change[0] in text
    with pytest.raises(ConfigError, match=reason):
        load_settings(write(tmp_path, text.replace(change[0], change[1], 1)))


def test_minio_needs_no_fallback_role(tmp_path: Path) -> None:
    text = (VALID + FALLBACK).replace("flavor: rgw", "flavor: minio")
    text = text.replace("  role_arn: arn:aws:iam:::role/credbroker-read\n", "")
    settings = load_settings(write(tmp_path, text))
    assert settings.fallback is not None and settings.fallback.role_arn is None
