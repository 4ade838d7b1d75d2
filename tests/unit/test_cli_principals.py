"""`credbroker clients | tokens | freeze | unfreeze` on a real SQLite state file: a token is
printed once and never listed; config principals are shown and read-only; every change is
audited with the OS user as actor; a freeze survives (it is in the file)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from credbroker.callers.tokens import new_token
from credbroker.cli import main

SEED_TOKEN, SEED_HASH = new_token()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "credbroker.yaml"
    path.write_text(
        json.dumps(
            {
                "object_store": {"endpoint": "http://127.0.0.1:9"},
                "spaces": {
                    "ENG": {"bucket": "cb-main", "prefix": "ENG/"},
                    "OPS": {"bucket": "cb-main", "prefix": "OPS/"},
                },
                "clients": [{"id": "seeded", "token_sha256": SEED_HASH, "spaces": ["ENG"]}],
                "audit": {"path": "audit.jsonl"},
                "state": {"kind": "sqlite", "path": "state.sqlite3"},
            }
        )
    )
    return path


def run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_principal_lifecycle_from_the_command_line(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, config, "clients", "add", "rule-a", "--space", "ENG", "--access", "write",
        "--rate", "5", "--burst", "10", "--issue-token",
    )  # fmt: skip
    assert code == 0 and "added rule-a" in out
    token = re.search(r"shown once: (cbk_\S+)", out)
    assert token is not None
    digest = hashlib.sha256(token[1].encode()).hexdigest()

    code, out, _ = run(capsys, config, "tokens", "issue", "rule-a", "--expires-in", "30d")
    assert code == 0
    second = re.search(r"token (tok_[0-9a-f]{16}) \(expires (\S+)\); shown once: (cbk_\S+)", out)
    assert second is not None and second[2].endswith("Z")
    code, _, err = run(capsys, config, "tokens", "issue", "rule-a")
    assert code == 2 and "revoke one first" in err

    code, listing, _ = run(capsys, config, "clients", "list")
    assert "seeded  [config]" in listing and "rule-a  [store]" in listing
    assert "2 usable token(s)" in listing
    code, shown, _ = run(capsys, config, "clients", "show", "rule-a", "--json")
    data = json.loads(shown)
    assert data["ratePerSecond"] == 5 and data["burst"] == 10 and len(data["tokens"]) == 2
    for text in (listing, shown):
        assert token[1] not in text and second[3] not in text
        assert digest not in text and digest[:16] not in text

    assert run(capsys, config, "clients", "set", "rule-a", "--space", "OPS")[0] == 0
    code, shown, _ = run(capsys, config, "clients", "show", "rule-a", "--json")
    assert json.loads(shown)["spaces"] == ["OPS"]
    assert run(capsys, config, "tokens", "revoke", "rule-a", second[1])[0] == 0
    assert run(capsys, config, "clients", "revoke", "rule-a")[0] == 0
    code, out, _ = run(capsys, config, "clients", "show", "rule-a")
    assert "0 usable token(s)  revoked" in out and "  usable" not in out

    # Config principals are read-only here.
    code, _, err = run(capsys, config, "clients", "set", "seeded", "--access", "write")
    assert code == 2 and "config file" in err

    audit = (config.parent / "audit.jsonl").read_text()
    records = [json.loads(line) for line in audit.splitlines()]
    assert [r["event"] for r in records] == [
        "client_added",
        "token_issued",
        "token_issued",
        "client_changed",
        "token_revoked",
        "client_revoked",
    ]
    assert all(r["actor"].startswith("cli:") for r in records)
    assert token[1] not in audit and second[3] not in audit and digest not in audit


def test_freeze_and_unfreeze_from_the_command_line(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, config, "freeze", "--space", "ENG")
    assert code == 2 and "--reason" in err
    code, out, _ = run(capsys, config, "freeze", "--space", "ENG", "--reason", "INC-1 export")
    assert code == 0
    freeze_id = re.search(r"freeze (frz_[0-9a-f]{16})", out)
    assert freeze_id is not None
    code, out, _ = run(capsys, config, "freeze", "--client", "seeded", "--reason", "leak")
    assert code == 0
    code, out, _ = run(capsys, config, "freeze", "--list")
    assert "INC-1 export" in out and "leak" in out  # read back from the file: it persists
    assert run(capsys, config, "unfreeze", freeze_id[1])[0] == 0
    assert run(capsys, config, "unfreeze", "--client", "seeded")[0] == 0
    code, out, _ = run(capsys, config, "freeze", "--list", "--json")
    assert json.loads(out) == []
    code, out, _ = run(capsys, config, "freeze", "--list", "--all", "--json")
    assert sorted(f["reason"] for f in json.loads(out)) == ["INC-1 export", "leak"]
    code, _, err = run(capsys, config, "unfreeze", "frz_0123456789abcdef")
    assert code == 2 and "no active freeze" in err
    code, _, err = run(capsys, config, "freeze", "--space", "NOPE", "--reason", "x")
    assert code == 2 and "unknown space" in err
