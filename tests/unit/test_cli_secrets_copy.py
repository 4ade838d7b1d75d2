"""`credbroker secrets copy`: every configured secret (service, read-only, admin) reaches the
new store, values never shown, nothing overwritten."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from credbroker import wiring
from credbroker.cli import main
from credbroker.config import load_settings
from credbroker.secrets.sealing import new_key

SERVICE = "credbroker/object-store/service"
READ_ONLY = "credbroker/object-store/read-only"
ADMIN = "credbroker/object-store/rgw-admin"
VALUES = {
    SERVICE: {"access_key_id": "AKSERVICE", "secret_access_key": "service-secret-never-shown"},
    READ_ONLY: {"access_key_id": "AKREAD", "secret_access_key": "read-secret-never-shown"},
    ADMIN: {"access_key_id": "AKADMIN", "secret_access_key": "admin-secret-never-shown"},
}


def config(tmp_path: Path, name: str) -> Path:
    (tmp_path / f"{name}.key").write_text(new_key())
    (tmp_path / f"{name}.key").chmod(0o600)
    (tmp_path / "fallback.key").write_text(new_key())
    (tmp_path / "fallback.key").chmod(0o600)
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"""
secret_store: {{kind: embedded, path: {name}.sealed, key_env: CB_UNSET_TEST_KEY,
                key_file: {name}.key}}
object_store: {{flavor: rgw, endpoint: "http://127.0.0.1:7480", role_arn: "arn:aws:iam:::role/v",
                credentials_path: {SERVICE}}}
spaces: {{ENG: {{bucket: cb-main, prefix: ENG/}}}}
fallback: {{credentials_path: {READ_ONLY}, role_arn: "arn:aws:iam:::role/r",
            cache_file: fallback.sealed, key_env: CB_UNSET_TEST_KEY, key_file: fallback.key}}
rotation:
  credentials:
    - name: service
      secret_path: {SERVICE}
      driver: {{kind: rgw, user: credbroker-broker, admin_credentials_path: {ADMIN}}}
      schedule: {{interval_seconds: 86400}}
      grace_seconds: 600
audit: {{path: {name}-audit.jsonl}}
state: {{kind: sqlite, path: state.sqlite3}}
"""
    )
    return path


async def read_all(path: Path, paths: list[str]) -> dict[str, dict[str, str]]:
    store = wiring.build_secret_store(load_settings(path))
    try:
        return {p: dict((await store.read(p)).data) for p in paths}
    finally:
        await store.close()


async def seed(path: Path) -> None:
    store = wiring.build_secret_store(load_settings(path))
    try:
        for secret_path, data in VALUES.items():
            await store.write(secret_path, data, cas=0)
    finally:
        await store.close()


def test_every_configured_secret_is_copied_and_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = config(tmp_path, "old"), config(tmp_path, "new")
    asyncio.run(seed(old))
    assert main(["secrets", "copy", "--from-config", str(old), "--to-config", str(new)]) == 0
    out = capsys.readouterr()
    assert asyncio.run(read_all(new, list(VALUES))) == VALUES
    audit = (tmp_path / "new-audit.jsonl").read_text()
    for data in VALUES.values():
        assert data["secret_access_key"] not in out.out + out.err + audit
    assert [json.loads(line)["path"] for line in audit.splitlines()] == list(VALUES)
    assert f"{READ_ONLY}: copied as version 1" in out.out

    # Again: the same values are already there; nothing written.
    assert main(["secrets", "copy", "--from-config", str(old), "--to-config", str(new)]) == 0
    assert "already there as version 1" in capsys.readouterr().out


def test_except_leaves_a_path_for_a_new_key_and_a_different_value_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = config(tmp_path, "old"), config(tmp_path, "new")
    asyncio.run(seed(old))
    args = ["secrets", "copy", "--from-config", str(old), "--to-config", str(new)]
    assert main([*args, "--except", SERVICE]) == 0
    assert SERVICE not in capsys.readouterr().out

    async def put_new_service_key() -> None:
        store = wiring.build_secret_store(load_settings(new))
        try:
            await store.write(SERVICE, {"access_key_id": "AKNEW", "secret_access_key": "n"}, cas=0)
        finally:
            await store.close()

    asyncio.run(put_new_service_key())
    assert main(args) == 2  # the service key differs: refused, not overwritten
    assert "different secret" in capsys.readouterr().err
    assert asyncio.run(read_all(new, [SERVICE]))[SERVICE]["access_key_id"] == "AKNEW"
    same = ["secrets", "copy", "--from-config", str(old), "--to-config", str(old)]
    assert main(same) == 2
    assert "the same secret store" in capsys.readouterr().err


def test_the_audit_signing_key_is_a_configured_secret_too(tmp_path: Path) -> None:
    path = config(tmp_path, "old")
    text = path.read_text().replace(
        "audit: {path: old-audit.jsonl}",
        "audit: {path: old-audit.jsonl, signing_key_secret_path: credbroker/audit/signing}",
    )
    path.write_text(text)
    settings = load_settings(path)
    assert wiring.configured_secret_paths(settings) == [SERVICE, READ_ONLY, ADMIN]
    assert wiring.other_secret_paths(settings) == ["credbroker/audit/signing"]
