"""The CLI for a secret store whose owner rotates the broker's keys (CyberArk CCP): `rotate`
refuses, `rotation status` says who rotates, `check-config` shows the account mapping."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from credbroker import wiring
from credbroker.config import CyberArkCcpStoreConfig, Settings
from credbroker.rotation.owned import owner_rotated_status

OWNER = "CyberArk"


def owner_rotates(settings: Settings) -> bool:
    # getattr: tests hand the CLI stand-in settings that carry only what rotation needs.
    return isinstance(getattr(settings, "secret_store", None), CyberArkCcpStoreConfig)


def refuse_rotate(settings: Settings) -> int:
    print(
        f"credbroker: not rotated: the secret store is {settings.secret_store.kind}, read-only "
        f"for the broker; {OWNER}'s CPM rotates these keys and the broker follows them (a key "
        "the object store refuses is read again from CCP). Rotate in CyberArk (PVWA: the "
        "account's Change) or see vendor/cyberark/README.md",
        file=sys.stderr,
    )
    return 2


def rotation_status(settings: Settings, *, as_json: bool) -> int:
    keys = {"service": settings.object_store.credentials_path}
    if settings.fallback is not None:
        keys["fallback"] = settings.fallback.credentials_path

    async def status() -> list[dict[str, Any]]:
        store = wiring.build_secret_store(settings)
        try:
            return [s.as_dict() for s in await owner_rotated_status(keys, store, owner=OWNER)]
        finally:
            await store.close()

    statuses = asyncio.run(status())
    if as_json:
        print(json.dumps(statuses, indent=2))
        return 0
    for s in statuses:
        print(f"{s['name']}  ({s['secret_path']}, {settings.secret_store.kind})")
        print(f"  key in service  {s['current_key_id'] or '?'}  (version {s['version'] or '?'})")
        print(
            f"  rotated by      {OWNER} (CPM); the broker never rotates it and follows a new "
            "key by itself"
        )
        for problem in s["problems"]:
            print(f"  problem         {problem}")
    return 0


def check_config(settings: Settings) -> int:
    """Offline checks of a CCP store (the model already proved every path the broker reads is
    mapped, and https unless allowed): print the mapping, and warn about certificate files
    this host cannot read. A warning, not a failure: config files are validated away from the
    broker's host too (CI, tests/unit/test_shipped_configs.py), and `serve` refuses to start
    without them anyway."""
    store = settings.secret_store
    if not isinstance(store, CyberArkCcpStoreConfig):
        return 0
    auth = "client certificate" if store.client_cert else "allowed machines only (no client_cert)"
    print(f"  cyberark-ccp: AppID {store.app_id} at {store.url}/{store.service_path}, {auth}")
    for path, account in sorted(store.accounts.items()):
        query = ", ".join(f"{k}={v}" for k, v in account.query().items())
        fields = ", ".join(f"{k} <- {v}" for k, v in account.fields.items())
        print(f"  account {path}: {query} ({fields})")
    print(f"  rotation: by {OWNER}'s CPM (the broker only follows)")
    for problem in store.unreadable_files():
        print(
            f"credbroker: warning: {problem} (cannot be read here; `serve` needs it)",
            file=sys.stderr,
        )
    return 0
