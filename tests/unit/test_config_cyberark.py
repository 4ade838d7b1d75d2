"""secret_store kind cyberark-ccp: the config model, what check-config proves offline, and the
CLI's answers for a store whose owner (CyberArk's CPM) rotates the broker's keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from credbroker import wiring
from credbroker.cli import main
from credbroker.config import CyberArkCcpStoreConfig, load_settings
from credbroker.errors import ConfigError
from tests.doubles.cyberark_ccp import Account, CcpDouble, Pki

SERVICE = "credbroker/object-store/service"
READ_ONLY = "credbroker/object-store/read-only"


def config(
    url: str = "https://ccp.example.com",
    *,
    store_extra: str = "",
    accounts: str = "",
    top_extra: str = "",
) -> str:
    accounts = (
        accounts
        or f"""
    {SERVICE}:
      safe: MinIO-credbroker
      object: minio-credbroker-service
"""
    )
    return f"""
object_store:
  flavor: rgw
  endpoint: http://127.0.0.1:7480
  role_arn: arn:aws:iam:::role/credbroker-vend
spaces:
  ENG: {{bucket: confluence-exports, prefix: ENG/}}
secret_store:
  kind: cyberark-ccp
  url: {url}
  app_id: credbroker
  client_cert: pki/credbroker.crt
  client_key: pki/credbroker.key
  ca_file: pki/ca.pem
{store_extra}
  accounts:
{accounts}
{top_extra}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "credbroker.yaml"
    path.write_text(text)
    return path


def test_a_ccp_store_loads_with_defaults_and_paths_next_to_the_file(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, config()))
    store = settings.secret_store
    assert isinstance(store, CyberArkCcpStoreConfig)
    assert store.client_cert == tmp_path / "pki/credbroker.crt"
    account = store.accounts[SERVICE]
    assert account.query() == {"Safe": "MinIO-credbroker", "Object": "minio-credbroker-service"}
    assert account.fields == {"access_key_id": "UserName", "secret_access_key": "Content"}
    assert (store.service_path, store.reason, store.verify_tls) == (
        "AIMWebService",
        "credbroker",
        True,
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            config(
                top_extra="""rotation:
  credentials:
    - name: service
      secret_path: credbroker/object-store/service
      driver: {kind: rgw, user: credbroker, admin_credentials_path: x/admin}
      schedule: {interval_seconds: 86400}
"""
            ),
            "CyberArk's CPM rotates these keys",
        ),
        (
            config(accounts="    other/path: {safe: S, object: O}\n"),
            "object_store.credentials_path 'credbroker/object-store/service' is not mapped",
        ),
        (
            config(
                top_extra=f"""fallback:
  credentials_path: {READ_ONLY}
  role_arn: arn:aws:iam:::role/credbroker-read
"""
            ),
            "fallback.credentials_path",
        ),
        (
            config(top_extra="audit: {signing_key_secret_path: credbroker/audit/signing}"),
            "audit.signing_key_secret_path 'credbroker/audit/signing' is not mapped",
        ),
        (config(accounts=f"    {SERVICE}: {{safe: S}}\n"), "give `object`, or `username`"),
        (config(accounts=f"    {SERVICE}: {{safe: 'a&b', object: O}}\n"), "should match"),
        (config(accounts=f"    {SERVICE}: {{safe: 'S', object: 'x+y'}}\n"), "should match"),
        (config(url="http://ccp.example.com"), "secret_store.url http://ccp.example.com"),
        (
            # ca_file would turn verification back on (as for Vault)
            config(store_extra="  verify_tls: false").replace("  ca_file: pki/ca.pem\n", ""),
            "verify_tls: false",
        ),
        (
            config().replace("  client_key: pki/credbroker.key\n", ""),
            "both client_cert and client_key",
        ),
    ],
)
def test_what_cannot_work_is_refused_naming_why(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert reason in caught.value.message


def test_plain_http_is_allowed_on_loopback_or_when_insecure_transport_is_allowed(
    tmp_path: Path,
) -> None:
    local = config(url="https://127.0.0.1:8443").replace("https://127", "http://127")
    load_settings(
        write(
            tmp_path,
            local.replace("  client_cert: pki/credbroker.crt\n", "").replace(
                "  client_key: pki/credbroker.key\n", ""
            ),
        )
    )
    remote = config(url="http://ccp.example.com", top_extra="allow_insecure_transport: true")
    settings = load_settings(write(tmp_path, remote))
    assert settings.insecure_transport() == ["secret_store.url http://ccp.example.com (plain http)"]


def test_check_config_shows_the_mapping_and_warns_of_unreadable_certificates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, config())
    assert main(["check-config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "secret store: cyberark-ccp" in captured.out
    assert (
        f"account {SERVICE}: Safe=MinIO-credbroker, Object=minio-credbroker-service "
        "(access_key_id <- UserName, secret_access_key <- Content)"
    ) in captured.out
    assert "rotation: by CyberArk's CPM" in captured.out
    assert "warning: secret_store.client_cert" in captured.err
    assert "warning: secret_store.ca_file" in captured.err

    pki = Pki(tmp_path / "pki", name="ca")
    pki.issue("credbroker")
    assert main(["check-config", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_serve_refuses_to_start_without_its_certificates(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, config()))
    with pytest.raises(ConfigError, match="certificates cannot be loaded"):
        wiring.build_secret_store(settings)


def test_rotate_refuses_a_ccp_store_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, config())
    assert main(["rotate", "--config", str(path), "--now"]) == 2
    err = capsys.readouterr().err
    assert "not rotated" in err and "CyberArk's CPM rotates these keys" in err


def test_wiring_builds_a_read_only_ccp_store_behind_the_resilient_wrapper(tmp_path: Path) -> None:
    Pki(tmp_path / "pki", name="ca").issue("credbroker")
    settings = load_settings(write(tmp_path, config()))
    store = wiring.build_secret_store(settings)
    assert (store.kind, store.writable, type(store.inner).__name__) == (
        "cyberark-ccp",
        False,
        "CyberArkCcpStore",
    )


@pytest.fixture
async def ccp(tmp_path: Path) -> AsyncIterator[CcpDouble]:
    pki = Pki(tmp_path / "pki", name="ca")
    client = pki.issue("credbroker")
    async with CcpDouble(pki) as double:
        double.add_application(
            "credbroker", safes={"MinIO-credbroker"}, certificates={client.fingerprint}
        )
        double.add_account(
            Account(
                "MinIO-credbroker",
                "minio-credbroker-service",
                "svc-secret-never-shown",
                {"UserName": "AKSERVICE"},
            )
        )
        yield double


async def test_rotation_status_says_cyberark_rotates_and_shows_the_key_id_only(
    tmp_path: Path, ccp: CcpDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, config(url=ccp.url))

    assert await asyncio.to_thread(main, ["rotation", "status", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "rotated by      CyberArk (CPM)" in text
    assert "key in service  AKSERVICE  (version 1)" in text

    assert (
        await asyncio.to_thread(main, ["rotation", "status", "--config", str(path), "--json"]) == 0
    )
    out = capsys.readouterr().out
    (status,) = json.loads(out)
    assert status == {
        "name": "service",
        "secret_path": SERVICE,
        "rotated_by": "CyberArk",
        "current_key_id": "AKSERVICE",
        "version": 1,
        "problems": [],
    }
    assert "svc-secret-never-shown" not in text + out


async def test_the_admin_api_says_cyberark_rotates_instead_of_rotating(
    tmp_path: Path, ccp: CcpDouble
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from credbroker.callers.tokens import new_token
    from credbroker.web.app import create_app

    token, digest = new_token()
    admin = f"""clients:
  - {{id: ops, token_sha256: {digest}, spaces: [ENG], admin: true}}
audit: {{path: {tmp_path / "audit.jsonl"}}}
state: {{kind: sqlite, path: {tmp_path / "state.sqlite3"}}}
"""
    settings = load_settings(write(tmp_path, config(url=ccp.url, top_extra=admin)))
    async with TestClient(TestServer(create_app(settings))) as client:
        headers = {"Authorization": f"Bearer {token}"}
        for method, path in (
            ("GET", "/v1/admin/rotations"),
            ("POST", "/v1/admin/rotations/service"),
        ):
            response = await client.request(method, path, headers=headers)
            body = await response.json()
            assert response.status == 409, body
            assert body["error"]["code"] == "secret_store_read_only"
            assert "CyberArk" in body["error"]["message"]
