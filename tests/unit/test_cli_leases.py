"""`credbroker leases list` and `credbroker revoke` on the SQLite state store, with the
default enforcer (none): the revocation is recorded and audited, the leases show revoked, and
the exit status and output say the object store did not enforce it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from credbroker.cli import main
from credbroker.cli_leases import EXIT_NOT_ENFORCED
from credbroker.leases import Lease
from credbroker.secrets.sealing import new_key
from credbroker.state.sqlite import SqliteStateStore


def lease(n: int, client: str, *, expired: bool = False) -> Lease:
    now = datetime.now(UTC)
    return Lease(
        lease_id=f"cb-{n:024x}",
        kind="vend",
        client=client,
        space="ENG",
        bucket="cb-main",
        prefix="ENG/",
        access="read",
        ttl_seconds=900,
        issued_at=now - timedelta(seconds=1000 if expired else 10),
        expires_at=now + timedelta(seconds=-100 if expired else 890),
        mode="normal",
        access_key_id=f"ASIA{n:016d}",
    )


@pytest.fixture
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
                "object_store": {"endpoint": "http://127.0.0.1:9", "flavor": "minio"},
                "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
                "audit": {"path": "audit.jsonl"},
                "state": {"kind": "sqlite", "path": "state.sqlite3"},
            }
        )
    )

    async def seed() -> None:
        store = await SqliteStateStore.open(tmp_path / "state.sqlite3")
        await store.add_leases(
            [lease(1, "fin"), lease(2, "fin"), lease(3, "eng"), lease(4, "fin", expired=True)]
        )
        await store.close()

    asyncio.run(seed())
    return path


def test_list_filters_and_never_shows_a_secret(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["leases", "list", "-c", str(config), "--client", "fin", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [x["leaseId"][-1] for x in listed] == ["2", "1", "4"]
    assert [x["state"] for x in listed] == ["active", "active", "expired"]
    assert main(["leases", "list", "-c", str(config), "--client", "fin", "--active"]) == 0
    table = capsys.readouterr().out
    assert "cb-" + "0" * 23 + "1" in table and "cb-" + "0" * 23 + "4" not in table
    assert "ASIA0000000000000001" in table


def test_revoke_records_marks_and_says_the_store_did_not_enforce(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["revoke", "-c", str(config), "--client", "fin", "--reason", "INC-1"])
    assert code == EXIT_NOT_ENFORCED
    out = capsys.readouterr().out
    assert "2 leases revoked" in out and "object store enforced: NO" in out
    assert "MinIO" in out
    main(["leases", "list", "-c", str(config), "--json"])
    states = {x["leaseId"][-1]: x["state"] for x in json.loads(capsys.readouterr().out)}
    assert states == {"1": "revoked", "2": "revoked", "3": "active", "4": "expired"}
    records = [
        json.loads(line) for line in (config.parent / "audit.jsonl").read_text().splitlines()
    ]
    [event] = [r for r in records if r["event"] == "revoked"]
    assert event["reason"] == "INC-1" and event["by"].startswith("cli:")
    assert event["object_store_enforced"] is False


@pytest.mark.parametrize(
    "selector",
    [
        ["--lease", "cb-nope"],
        ["--lease", "cb-" + "f" * 24],  # unknown
        ["--client", "*"],
        ["--issued-before", "last week"],
    ],
)
def test_a_bad_selector_exits_2_and_changes_nothing(
    config: Path, selector: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["revoke", "-c", str(config), *selector]) == 2
    assert "credbroker:" in capsys.readouterr().err
    audit = config.parent / "audit.jsonl"
    assert not audit.exists() or audit.read_text() == ""  # nothing recorded
