"""`credbroker secrets put` and `secrets get --reveal` leave an audit record: who (the OS
user), which path, version and field names; never a value."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from credbroker.cli import main
from credbroker.secrets.sealing import new_key

SECRET = "a-secret-value-that-must-never-be-audited"


def test_secret_commands_are_audited_without_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "seal.key").write_text(new_key())
    (tmp_path / "seal.key").chmod(0o600)
    config = tmp_path / "credbroker.yaml"
    config.write_text(
        json.dumps(
            {
                "secret_store": {
                    "kind": "embedded",
                    "path": "secrets.sealed",
                    "key_env": "CREDBROKER_TEST_UNSET_KEY",
                    "key_file": "seal.key",
                },
                "object_store": {"endpoint": "http://127.0.0.1:9"},
                "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
                "audit": {"path": "audit.jsonl"},
                "state": {"kind": "sqlite", "path": "rotation-state.sqlite3"},
            }
        )
    )
    value = json.dumps({"access_key_id": "AKID", "secret_access_key": SECRET})
    monkeypatch.setattr(sys, "stdin", io.StringIO(value))
    base = ["--config", str(config)]

    assert main(["secrets", "put", *base, "svc"]) == 0
    assert main(["secrets", "get", *base, "svc"]) == 0  # fields hidden: no record
    assert main(["secrets", "get", *base, "--reveal", "svc"]) == 0
    assert SECRET in capsys.readouterr().out  # revealed to the operator, as asked

    text = (tmp_path / "audit.jsonl").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert [(r["event"], r["path"], r["version"], r["via"]) for r in records] == [
        ("secret_written", "svc", 1, "cli"),
        ("secret_revealed", "svc", 1, "cli"),
    ]
    assert all(r["fields"] == ["access_key_id", "secret_access_key"] for r in records)
    assert all(r["os_user"] for r in records)
    assert SECRET not in text and "AKID" not in text
