"""`credbroker audit keygen | public-key | verify` and `credbroker report` from the command
line: CLI processes each close their chain with a signed checkpoint; verify exits 0 on the
untouched file and 1, naming the line, on an edited one; the report counts what happened."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from credbroker.cli import main
from credbroker.secrets.sealing import new_key


def config(tmp_path: Path) -> Path:
    (tmp_path / "seal.key").write_text(new_key())
    (tmp_path / "seal.key").chmod(0o600)
    path = tmp_path / "credbroker.yaml"
    path.write_text(
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
                "audit": {"path": "audit.jsonl", "signing_key_file": "audit.pem"},
                "state": {"kind": "sqlite", "path": "rotation-state.sqlite3"},
            }
        )
    )
    return path


def test_keygen_verify_and_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config", str(config(tmp_path))]
    assert main(["audit", "keygen", str(tmp_path / "audit.pem")]) == 0
    public = capsys.readouterr().out
    assert public.startswith("-----BEGIN PUBLIC KEY-----")
    assert (tmp_path / "audit.pem").stat().st_mode & 0o077 == 0
    assert main(["audit", "keygen", str(tmp_path / "audit.pem")]) == 2  # never overwritten

    for n in range(2):  # two CLI processes' worth of chains (each closed at exit)
        monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"k": f"v{n}"})))
        assert main(["secrets", "put", *base, "svc"]) == 0
    assert (tmp_path / "audit.jsonl.pub").read_text() == public  # published next to the log
    assert main(["audit", "public-key", *base]) == 0
    capsys.readouterr()

    assert main(["audit", "verify", *base, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and [c["status"] for c in report["chains"]] == ["closed", "closed"]

    path = tmp_path / "audit.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace('"version":1', '"version":7')
    path.write_text("".join(lines))
    assert main(["audit", "verify", *base]) == 1
    out = capsys.readouterr().out
    assert f"FAILED: {path}:2: chain" in out and "seq 1 was edited" in out

    today = lines[0].split('"ts":"')[1][:10]
    assert main(["report", *base, "--from", today, "--to", today, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "kind,client,space,access,event,rule,actor,mode,reason,count,first,last,from,to,grants"
    ]  # secret_written records are not grants
