"""VaultKV2Store against VaultDouble: outages, refusals, AppRole, namespaces, leaks, loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import hvac.exceptions
import pytest

from credbroker.errors import (
    CasMismatch,
    ConfigError,
    InvalidRequest,
    SecretNotFound,
    SecretStoreError,
    SecretStorePermissionDenied,
    SecretStoreUnavailable,
)
from credbroker.secrets import vault as vault_module
from credbroker.secrets.vault import VaultKV2Store
from tests.doubles.vault import Policies, VaultDouble

TOKEN = "hvs.TOKEN-must-never-leak-1f2e"
ROLE_ID = "role-id-must-never-leak-7a9c"
SECRET_ID = "secret-id-must-never-leak-3b8d"
SECRET_VALUE = "SECRET-VALUE-must-never-leak-5c0a"
SECRETS = (TOKEN, ROLE_ID, SECRET_ID, SECRET_VALUE)

MakeStore = Callable[..., VaultKV2Store]


@pytest.fixture
async def vault() -> AsyncIterator[VaultDouble]:
    async with VaultDouble() as double:
        double.add_token(TOKEN)
        double.add_approle(ROLE_ID, SECRET_ID)
        yield double


@pytest.fixture
async def make_store(vault: VaultDouble) -> AsyncIterator[MakeStore]:
    stores: list[VaultKV2Store] = []

    def make(**overrides: Any) -> VaultKV2Store:
        kwargs: dict[str, Any] = {"token": TOKEN, "timeout_seconds": 2.0}
        if "approle_role_id" in overrides:
            kwargs.pop("token")
        store = VaultKV2Store(vault.url, **(kwargs | overrides))
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


def approle(**overrides: Any) -> dict[str, Any]:
    return {"approle_role_id": ROLE_ID, "approle_secret_id": SECRET_ID} | overrides


def logins(vault: VaultDouble) -> int:
    return vault.requests.count(("POST", "/v1/auth/approle/login"))


# --- outages ----------------------------------------------------------------------------------


async def test_sealed_vault_is_unavailable_for_read_write_and_check(
    vault: VaultDouble, make_store: MakeStore
) -> None:
    store = make_store()
    await store.write("app/creds", {"k": "v"}, cas=None)
    vault.seal()

    with pytest.raises(SecretStoreUnavailable, match="HTTP 503"):
        await store.read("app/creds")
    with pytest.raises(SecretStoreUnavailable):
        await store.write("app/creds", {"k": "v2"}, cas=None)
    with pytest.raises(SecretStoreUnavailable):
        await store.check()

    vault.unseal()
    await store.check()
    assert (await store.read("app/creds")).version == 1


async def test_stopped_server_is_unavailable_and_recovers_on_the_same_port(
    vault: VaultDouble, make_store: MakeStore
) -> None:
    store = make_store()
    await store.write("app/creds", {"k": "v"}, cas=None)
    await vault.stop()

    with pytest.raises(SecretStoreUnavailable, match="cannot connect"):
        await store.read("app/creds")
    with pytest.raises(SecretStoreUnavailable):
        await store.check()

    await vault.start()
    assert (await store.read("app/creds")).version == 1


async def test_unresolvable_host_is_unavailable() -> None:
    store = VaultKV2Store("http://vault.invalid:8200", token=TOKEN, timeout_seconds=2.0)
    try:
        with pytest.raises(SecretStoreUnavailable):
            await store.read("app/creds")
    finally:
        await store.close()


async def test_hanging_server_is_unavailable_after_about_the_timeout(
    vault: VaultDouble, make_store: MakeStore
) -> None:
    store = make_store(timeout_seconds=0.3)
    vault.hang(10)

    started = time.monotonic()
    with pytest.raises(SecretStoreUnavailable, match="timed out"):
        await store.read("app/creds")

    assert time.monotonic() - started < 1.5


async def test_the_event_loop_keeps_running_while_hvac_waits(
    vault: VaultDouble, make_store: MakeStore
) -> None:
    store = make_store()
    vault.put("app/creds", {"k": "v"})
    vault.hang(0.5)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        secret = await store.read("app/creds")
    finally:
        task.cancel()

    assert secret.version == 1
    assert ticks >= 20  # ~50 if the loop was free for the whole 0.5 s hang


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_server_errors_and_rate_limits_are_unavailable(
    vault: VaultDouble, make_store: MakeStore, status: int
) -> None:
    store = make_store()
    vault.fail_next(1, status)

    with pytest.raises(SecretStoreUnavailable, match=f"HTTP {status}"):
        await store.read("app/creds")


# --- refusals and answers ---------------------------------------------------------------------


async def test_403_on_a_path_is_permission_denied(
    vault: VaultDouble, make_store: MakeStore
) -> None:
    vault.add_token("narrow", Policies.prefixes("allowed/"))
    store = make_store(token="narrow")
    await store.write("allowed/creds", {"k": "v"}, cas=None)

    with pytest.raises(SecretStorePermissionDenied, match="HTTP 403"):
        await store.read("forbidden/creds")
    with pytest.raises(SecretStorePermissionDenied):
        await store.write("forbidden/creds", {"k": "v"}, cas=None)
    assert (await store.read("allowed/creds")).version == 1


async def test_a_revoked_token_fails_check_with_permission_denied(
    vault: VaultDouble, make_store: MakeStore
) -> None:
    store = make_store()
    await store.check()
    vault.revoke(TOKEN)

    with pytest.raises(SecretStorePermissionDenied):
        await store.check()


async def test_a_deleted_latest_version_is_not_found(
    vault: VaultDouble, make_store: MakeStore
) -> None:
    store = make_store()
    await store.write("app/creds", {"k": "v"}, cas=None)
    async with (
        aiohttp.ClientSession() as http,
        http.delete(f"{vault.url}/v1/secret/data/app/creds", headers={"X-Vault-Token": TOKEN}),
    ):
        pass

    with pytest.raises(SecretNotFound, match="HTTP 404"):
        await store.read("app/creds")


async def test_cas_required_is_not_mistaken_for_a_lost_race(
    vault: VaultDouble, make_store: MakeStore
) -> None:
    store = make_store()
    vault.fail_next(1, 400, ["check-and-set parameter required for this call"])

    with pytest.raises(SecretStoreError, match="HTTP 400") as caught:
        await store.write("app/creds", {"k": "v"}, cas=None)

    assert type(caught.value) is SecretStoreError


async def test_other_statuses_are_plain_secret_store_errors(
    vault: VaultDouble, make_store: MakeStore
) -> None:
    store = make_store()
    vault.fail_next(1, 418)

    with pytest.raises(SecretStoreError, match="HTTP 418") as caught:
        await store.read("app/creds")

    assert type(caught.value) is SecretStoreError


async def test_cas_mismatch_is_found_even_when_a_proxy_adds_a_charset() -> None:
    # hvac leaves `errors` empty unless Content-Type is exactly application/json.
    exc = hvac.exceptions.InvalidRequest(
        "raw", text='{"errors":["check-and-set parameter did not match the current version"]}'
    )
    assert isinstance(vault_module._translate(exc, "write", "p"), CasMismatch)


async def test_secret_values_must_be_strings(vault: VaultDouble, make_store: MakeStore) -> None:
    vault.put("app/creds", {"port": 5432, "password": SECRET_VALUE})

    with pytest.raises(SecretStoreError, match="non-string") as caught:
        await make_store().read("app/creds")

    assert SECRET_VALUE not in str(caught.value)


# --- AppRole ----------------------------------------------------------------------------------


async def test_approle_logs_in_once_and_again_after_its_token_is_revoked(
    vault: VaultDouble, make_store: MakeStore
) -> None:
    store = make_store(**approle())
    await store.write("app/creds", {"k": "v"}, cas=None)
    await store.read("app/creds")
    assert logins(vault) == 1

    for token in vault.issued_tokens:
        vault.revoke(token)
    secret = await store.read("app/creds")

    assert secret.version == 1
    assert logins(vault) == 2


async def test_approle_still_forbidden_after_one_relogin_is_permission_denied(
    vault: VaultDouble, make_store: MakeStore
) -> None:
    vault.add_approle("narrow-role", SECRET_ID, Policies.prefixes("allowed/"))
    store = make_store(**approle(approle_role_id="narrow-role"))

    with pytest.raises(SecretStorePermissionDenied, match="HTTP 403"):
        await store.read("forbidden/creds")

    assert logins(vault) == 2  # the first login, and exactly one retry


async def test_concurrent_403s_share_one_relogin(vault: VaultDouble, make_store: MakeStore) -> None:
    store = make_store(**approle())
    vault.put("app/creds", {"k": "v"})
    await store.read("app/creds")
    for token in vault.issued_tokens:
        vault.revoke(token)

    await asyncio.gather(*(store.read("app/creds") for _ in range(4)))

    assert logins(vault) == 2


async def test_a_refused_approle_login_is_permission_denied(
    vault: VaultDouble, make_store: MakeStore
) -> None:
    store = make_store(**approle(approle_secret_id="wrong-secret-id"))

    with pytest.raises(SecretStorePermissionDenied, match="AppRole login refused"):
        await store.read("app/creds")
    with pytest.raises(SecretStorePermissionDenied):
        await store.check()


async def test_approle_never_falls_back_to_the_vault_token_environment_variable(
    vault: VaultDouble, make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)  # TOKEN may read everything
    vault.add_approle("narrow-role", SECRET_ID, Policies.prefixes("allowed/"))
    store = make_store(**approle(approle_role_id="narrow-role"))

    with pytest.raises(SecretStorePermissionDenied):
        await store.read("forbidden/creds")


# --- namespaces -------------------------------------------------------------------------------


async def test_namespaces_are_isolated(vault: VaultDouble, make_store: MakeStore) -> None:
    team_a, team_b = make_store(namespace="team-a"), make_store(namespace="team-b/")
    root = make_store()

    await team_a.write("app/creds", {"owner": "a"}, cas=0)
    await team_b.write("app/creds", {"owner": "b"}, cas=0)

    assert dict((await team_a.read("app/creds")).data) == {"owner": "a"}
    assert dict((await team_b.read("app/creds")).data) == {"owner": "b"}
    with pytest.raises(SecretNotFound):
        await root.read("app/creds")
    assert vault.current_version("app/creds", namespace="team-a") == 1


# --- construction and lifecycle ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"token": TOKEN, "approle_role_id": ROLE_ID, "approle_secret_id": SECRET_ID},
        {"approle_role_id": ROLE_ID},
        {"token": TOKEN, "timeout_seconds": 0},
        {"token": TOKEN, "mount_point": "../sys"},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        VaultKV2Store("http://127.0.0.1:1", **kwargs)
    assert not any(secret in str(caught.value) for secret in SECRETS)


@pytest.mark.parametrize("path", ["", "/abs", "a//b", "a/../../sys/seal", "./x", "x/"])
async def test_paths_that_would_be_rewritten_are_refused(
    make_store: MakeStore, vault: VaultDouble, path: str
) -> None:
    store = make_store()
    with pytest.raises(InvalidRequest):
        await store.read(path)
    with pytest.raises(InvalidRequest):
        await store.write(path, {"k": "v"}, cas=None)
    assert vault.request_count == 0


async def test_close_is_idempotent_and_a_closed_store_refuses_calls(
    make_store: MakeStore,
) -> None:
    store = make_store()
    await store.check()
    await store.close()
    await store.close()

    with pytest.raises(SecretStoreError, match="closed"):
        await store.read("app/creds")


def test_repr_names_no_credentials() -> None:
    store = VaultKV2Store("http://127.0.0.1:1", **approle())
    assert not any(secret in repr(store) for secret in SECRETS)
    assert "approle" in repr(store)


# --- nothing secret in errors, chains or logs -------------------------------------------------

ECHO = [f"echo {TOKEN} {ROLE_ID} {SECRET_ID} {SECRET_VALUE}"]


async def _status_echo(vault: VaultDouble, status: int) -> None:
    vault.fail_next(1, status, ECHO)


async def _sealed(vault: VaultDouble, status: int) -> None:
    vault.seal()


async def _stopped(vault: VaultDouble, status: int) -> None:
    await vault.stop()


async def _hanging(vault: VaultDouble, status: int) -> None:
    vault.hang(10)


FAILURES: list[tuple[str, Callable[[VaultDouble, int], Awaitable[None]], int]] = [
    *((f"echo-{s}", _status_echo, s) for s in (400, 403, 404, 418, 429, 500, 502, 503, 504)),
    ("sealed", _sealed, 0),
    ("stopped", _stopped, 0),
    ("hanging", _hanging, 0),
]


@pytest.mark.parametrize("auth", ["token", "approle", "approle-refused"])
@pytest.mark.parametrize("operation", ["read", "write", "check"])
@pytest.mark.parametrize(("name", "cause", "status"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_no_credential_or_secret_value_leaks_from_any_failure(
    vault: VaultDouble,
    make_store: MakeStore,
    caplog: pytest.LogCaptureFixture,
    auth: str,
    operation: str,
    name: str,
    cause: Callable[[VaultDouble, int], Awaitable[None]],
    status: int,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, hvac, urllib3, aiohttp
    if auth == "token":
        store = make_store(timeout_seconds=0.3)
    else:
        secret_id = SECRET_ID if auth == "approle" else SECRET_ID + "-wrong"
        store = make_store(**approle(approle_secret_id=secret_id, timeout_seconds=0.3))
    await cause(vault, status)

    with pytest.raises(SecretStoreError) as caught:
        if operation == "read":
            await store.read("app/creds")
        elif operation == "write":
            await store.write("app/creds", {"password": SECRET_VALUE}, cas=3)
        else:
            await store.check()

    exc = caught.value
    assert exc.__cause__ is None and exc.__context__ is None
    texts = [str(exc), repr(exc), exc.message, caplog.text]
    texts += [f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, (name, secret, text)


# --- the double's own wire format (compared by hand with OpenBao 2.7.2, see the report) -------


async def test_double_health_metadata_and_listing_follow_the_api_docs(vault: VaultDouble) -> None:
    vault.put("app/one", {"k": "v"})
    vault.put("app/one", {"k": "v2"})
    vault.put("app/dir/two", {"k": "v"})
    headers = {"X-Vault-Token": TOKEN}
    async with aiohttp.ClientSession(vault.url, headers=headers) as http:
        async with http.get("/v1/sys/health") as response:
            assert (response.status, (await response.json())["sealed"]) == (200, False)
        async with http.get("/v1/secret/metadata/app/one") as response:
            metadata = (await response.json())["data"]
        async with http.get("/v1/secret/metadata/app", params={"list": "true"}) as response:
            listing = (await response.json())["data"]["keys"]
        vault.seal()
        async with http.get("/v1/sys/health") as response:
            assert (response.status, (await response.json())["sealed"]) == (503, True)
        async with http.get("/v1/secret/data/app/one") as response:
            assert (response.status, await response.json()) == (
                503,
                {"errors": ["Vault is sealed"]},
            )

    assert metadata["current_version"] == 2 and set(metadata["versions"]) == {"1", "2"}
    assert listing == ["dir/", "one"]
