"""A broker on CyberArk CCP (the CCP double over mTLS) instead of Vault: the double's set-up
(AppID, Safe, the service key's and the read-only identity's accounts) and the matching
`secret_store` settings. CyberArk owns these keys: the broker only reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from credbroker.secrets.cyberark import CcpAccount, CyberArkCcpStore
from support.rgw_server import RgwServer
from tests.doubles.cyberark_ccp import Account, CcpDouble

APP_ID = "credbroker"
SAFE = "MinIO-credbroker"
SERVICE_OBJECT = "rgw-credbroker-service"
READ_ONLY_OBJECT = "rgw-credbroker-read-only"


def seed(ccp: CcpDouble, rgw: RgwServer) -> None:
    """The accounts a CyberArk admin creates (vendor/cyberark/README.md): each RGW key as an
    account whose UserName is the access key id and whose password is the secret."""
    if not any(a.name == SERVICE_OBJECT for a in ccp.accounts):
        ccp.add_account(
            Account(
                SAFE, SERVICE_OBJECT, rgw.broker_secret_key, {"UserName": rgw.broker_access_key}
            )
        )
        ccp.add_account(
            Account(
                SAFE,
                READ_ONLY_OBJECT,
                rgw.readonly_secret_key,
                {"UserName": rgw.readonly_access_key},
            )
        )


def ccp_store_config(ccp: CcpDouble, paths: dict[str, str], **options: Any) -> dict[str, Any]:
    """`secret_store` settings: `paths` maps each credbroker path to an object in SAFE."""
    cert = ccp.client_for(APP_ID, safes={SAFE})
    return {
        "kind": "cyberark-ccp",
        "url": ccp.url,
        "app_id": APP_ID,
        "client_cert": str(cert.cert_file),
        "client_key": str(cert.key_file),
        "ca_file": str(ccp.pki.ca_file),
        "accounts": {path: {"safe": SAFE, "object": obj} for path, obj in paths.items()},
        **options,
    }


def ccp_store(ccp: CcpDouble, config: dict[str, Any], check_path: str) -> CyberArkCcpStore:
    """The same store the broker builds, for the test's own reads."""
    return CyberArkCcpStore(
        config["url"],
        app_id=APP_ID,
        accounts={
            path: CcpAccount(
                query={"Safe": SAFE, "Object": account["object"]},
                fields={"access_key_id": "UserName", "secret_access_key": "Content"},
            )
            for path, account in config["accounts"].items()
        },
        check_path=check_path,
        client_cert=Path(config["client_cert"]),
        client_key=Path(config["client_key"]),
        ca_file=ccp.pki.ca_file,
    )
