"""CyberArkCcpStore against CcpDouble (mTLS on loopback): the query it sends, the client
certificate, CA pinning, every documented error code, outages, CPM changes, no leaks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from credbroker.domain import BreakerState
from credbroker.errors import (
    ConfigError,
    CredbrokerError,
    SecretNotFound,
    SecretStoreError,
    SecretStorePermissionDenied,
    SecretStoreReadOnly,
    SecretStoreUnavailable,
)
from credbroker.secrets.cyberark import CcpAccount, CyberArkCcpStore
from credbroker.secrets.resilient import CircuitBreaker, ResilientSecretStore
from tests.doubles.cyberark_ccp import Account, CcpDouble, Issued, Pki

SAFE = "MinIO credbroker"  # a space: sent as %20
OBJECT = "MinIO-AccessKeys-credbroker svc"
PATH = "credbroker/object-store/service"
ACCESS_KEY = "AKCCPSERVICE0001"
SECRET = "ccp-secret-must-never-leak-9f3e"
NEW_SECRET = "ccp-rotated-secret-must-never-leak-77a1"
FIELDS = {"access_key_id": "UserName", "secret_access_key": "Content"}

MakeStore = Callable[..., CyberArkCcpStore]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def client_cert(pki: Pki) -> Issued:
    return pki.issue("credbroker")


@pytest.fixture
async def ccp(pki: Pki, client_cert: Issued) -> AsyncIterator[CcpDouble]:
    async with CcpDouble(pki) as double:
        double.add_application("credbroker", safes={SAFE}, certificates={client_cert.fingerprint})
        double.add_account(Account(SAFE, OBJECT, SECRET, {"UserName": ACCESS_KEY}))
        yield double


@pytest.fixture
async def make_store(ccp: CcpDouble, pki: Pki, client_cert: Issued) -> AsyncIterator[MakeStore]:
    stores: list[CyberArkCcpStore] = []

    def make(**overrides: Any) -> CyberArkCcpStore:
        query = overrides.pop("query", {"Safe": SAFE, "Object": OBJECT})
        kwargs: dict[str, Any] = {
            "app_id": "credbroker",
            "accounts": {PATH: CcpAccount(query=query, fields=overrides.pop("fields", FIELDS))},
            "check_path": PATH,
            "client_cert": client_cert.cert_file,
            "client_key": client_cert.key_file,
            "ca_file": pki.ca_file,
            "timeout_seconds": 2.0,
        }
        store = CyberArkCcpStore(overrides.pop("url", ccp.url), **(kwargs | overrides))
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


# --- the request -------------------------------------------------------------------------------


async def test_read_sends_the_documented_query_and_the_client_certificate(
    make_store: MakeStore, ccp: CcpDouble, client_cert: Issued
) -> None:
    store = make_store(
        reason="credbroker vend",
        connection_timeout_seconds=20,
        fail_request_on_password_change=True,
    )

    secret = await store.read(PATH)

    assert dict(secret.data) == {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET}
    assert secret.version == 1
    (request,) = ccp.requests
    assert request.query == {
        "AppID": "credbroker",
        "Safe": SAFE,
        "Object": OBJECT,
        "Reason": "credbroker vend",
        "ConnectionTimeout": "20",
        "FailRequestOnPasswordChange": "true",
    }
    assert request.certificate == client_cert.fingerprint
    assert store.writable is False and store.kind == "cyberark-ccp"


async def test_any_property_can_hold_a_field_and_a_username_query_finds_the_account(
    make_store: MakeStore, ccp: CcpDouble
) -> None:
    ccp.account(SAFE, OBJECT).properties["AWSAccessKeyID"] = "AKFROMPROPERTY"
    store = make_store(
        query={"Safe": SAFE, "UserName": ACCESS_KEY},
        fields={"access_key_id": "AWSAccessKeyID", "secret_access_key": "Content"},
    )

    secret = await store.read(PATH)

    assert secret.get("access_key_id") == "AKFROMPROPERTY"
    assert ccp.requests[-1].query["UserName"] == ACCESS_KEY


@pytest.mark.parametrize("value", ["a+b", "a&b", "50%", "a;b", "tab\there"])
def test_values_ccp_refuses_are_refused_never_cleaned(
    value: str, pki: Pki, client_cert: Issued
) -> None:
    with pytest.raises(ConfigError, match="CCP refuses"):
        CyberArkCcpStore(
            "https://127.0.0.1:1",
            app_id="credbroker",
            accounts={PATH: CcpAccount(query={"Safe": SAFE, "Object": value}, fields=FIELDS)},
            check_path=PATH,
        )


def test_a_client_certificate_needs_https(client_cert: Issued) -> None:
    with pytest.raises(ConfigError, match="https"):
        CyberArkCcpStore(
            "http://127.0.0.1:1",
            app_id="credbroker",
            accounts={PATH: CcpAccount(query={"Safe": SAFE, "Object": OBJECT}, fields=FIELDS)},
            check_path=PATH,
            client_cert=client_cert.cert_file,
            client_key=client_cert.key_file,
        )


def test_unreadable_certificates_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be loaded"):
        CyberArkCcpStore(
            "https://127.0.0.1:1",
            app_id="credbroker",
            accounts={PATH: CcpAccount(query={"Safe": SAFE, "Object": OBJECT}, fields=FIELDS)},
            check_path=PATH,
            client_cert=tmp_path / "nope.crt",
            client_key=tmp_path / "nope.key",
        )


# --- refusals: configuration errors, never outages ----------------------------------------------


async def test_without_the_registered_client_certificate_the_app_fails_authentication(
    make_store: MakeStore, ccp: CcpDouble, pki: Pki
) -> None:
    stranger = pki.issue("someone-else")
    for store in (
        make_store(client_cert=None, client_key=None),
        make_store(client_cert=stranger.cert_file, client_key=stranger.key_file),
    ):
        with pytest.raises(SecretStorePermissionDenied, match="APPAP306E") as caught:
            await store.read(PATH)
        assert caught.value.status == 502
    assert [r.status for r in ccp.requests] == [403, 403]


async def test_a_machine_not_allowed_fails_authentication(
    make_store: MakeStore, ccp: CcpDouble
) -> None:
    ccp.applications["credbroker"].machines = {"10.1.2.3"}
    with pytest.raises(SecretStorePermissionDenied, match="APPAP306E"):
        await make_store().read(PATH)
    ccp.applications["credbroker"].machines = {"127.0.0.1"}
    assert (await make_store().read(PATH)).get("secret_access_key") == SECRET


async def test_an_unknown_app_id_is_permission_denied(make_store: MakeStore) -> None:
    with pytest.raises(SecretStorePermissionDenied, match="APPAP008E"):
        await make_store(app_id="not-registered").read(PATH)


@pytest.mark.parametrize("case", ["no such object", "app not in the safe", "unmapped path"])
async def test_not_found_is_secret_not_found(
    case: str, make_store: MakeStore, ccp: CcpDouble
) -> None:
    store = make_store(query={"Safe": SAFE, "Object": "nothing-here"})
    path = PATH
    if case == "app not in the safe":
        ccp.applications["credbroker"].safes = set()
        store = make_store()
    elif case == "unmapped path":
        store, path = make_store(), "credbroker/object-store/other"
    with pytest.raises(SecretNotFound) as caught:
        await store.read(path)
    assert caught.value.status == 502


async def test_several_matching_accounts_is_a_config_error_not_an_outage(
    make_store: MakeStore, ccp: CcpDouble
) -> None:
    ccp.add_account(Account(SAFE, "a-twin", "other", {"UserName": ACCESS_KEY}))
    with pytest.raises(SecretStoreError, match="APPAP227E") as caught:
        await make_store(query={"Safe": SAFE, "UserName": ACCESS_KEY}).read(PATH)
    assert not isinstance(caught.value, SecretStoreUnavailable)
    assert caught.value.code == "ccp_query_ambiguous"


async def test_a_missing_property_is_a_config_error(make_store: MakeStore) -> None:
    store = make_store(fields={"access_key_id": "AWSAccessKeyID", "secret_access_key": "Content"})
    with pytest.raises(SecretStoreError, match="AWSAccessKeyID") as caught:
        await store.read(PATH)
    assert caught.value.code == "ccp_property_missing"


async def test_writes_are_refused_without_a_request(make_store: MakeStore, ccp: CcpDouble) -> None:
    store = make_store()
    for cas in (None, 0, 3):
        with pytest.raises(SecretStoreReadOnly, match="CPM"):
            await store.write(PATH, {"access_key_id": "x", "secret_access_key": "y"}, cas=cas)
    assert ccp.requests == []


# --- outages: the breaker and the read-only fallback take over ----------------------------------


async def test_ccp_unable_to_reach_its_vault_is_an_outage(
    make_store: MakeStore, ccp: CcpDouble
) -> None:
    ccp.vault_down()
    with pytest.raises(SecretStoreUnavailable, match="APPAP007E"):
        await make_store().read(PATH)


@pytest.mark.parametrize(("status", "code"), [(500, ""), (503, ""), (502, ""), (429, "")])
async def test_5xx_and_429_are_outages(
    status: int, code: str, make_store: MakeStore, ccp: CcpDouble
) -> None:
    ccp.fail_next(1, status, code)
    with pytest.raises(SecretStoreUnavailable, match=f"HTTP {status}") as caught:
        await make_store().read(PATH)
    assert caught.value.status == 503


async def test_a_password_change_in_progress_with_fail_request_is_an_outage(
    make_store: MakeStore, ccp: CcpDouble
) -> None:
    ccp.account(SAFE, OBJECT).change_in_process = True
    assert (await make_store().read(PATH)).get("secret_access_key") == SECRET  # the default
    with pytest.raises(SecretStoreUnavailable, match="APPAP282E"):
        await make_store(fail_request_on_password_change=True).read(PATH)


async def test_stopped_and_hanging_ccp_are_outages(make_store: MakeStore, ccp: CcpDouble) -> None:
    store = make_store(timeout_seconds=0.3)
    ccp.hang(5)
    with pytest.raises(SecretStoreUnavailable, match="timed out"):
        await store.read(PATH)
    ccp.hang(0)
    await ccp.stop()
    with pytest.raises(SecretStoreUnavailable, match="cannot connect"):
        await store.read(PATH)
    await ccp.start()
    assert (await store.read(PATH)).get("secret_access_key") == SECRET


async def test_a_server_certificate_from_another_ca_is_refused_before_any_request(
    make_store: MakeStore, ccp: CcpDouble, tmp_path: Path
) -> None:
    other = Pki(tmp_path / "other", name="other-ca")
    with pytest.raises(SecretStoreUnavailable, match="TLS"):
        await make_store(ca_file=other.ca_file).read(PATH)
    assert ccp.requests == []


async def test_through_the_resilient_store_outages_open_the_breaker_refusals_do_not(
    make_store: MakeStore, ccp: CcpDouble
) -> None:
    breaker = CircuitBreaker(failure_threshold=2, open_seconds=60)
    store = ResilientSecretStore(make_store(), breaker=breaker, timeout_seconds=2, attempts=1)
    assert store.writable is False
    registered = ccp.applications["credbroker"].certificates
    ccp.applications["credbroker"].certificates = {"0" * 64}
    for _ in range(3):
        with pytest.raises(SecretStorePermissionDenied):
            await store.read(PATH)
    assert breaker.state is BreakerState.CLOSED
    ccp.applications["credbroker"].certificates = registered
    ccp.vault_down()
    for _ in range(2):
        with pytest.raises(SecretStoreUnavailable):
            await store.read(PATH)
    assert breaker.state.value == BreakerState.OPEN.value


# --- versions: what a CPM change looks like ------------------------------------------------------


async def test_a_cpm_change_is_a_new_version_and_older_ones_are_gone(
    make_store: MakeStore, ccp: CcpDouble
) -> None:
    store = make_store()
    assert (await store.read(PATH)).version == 1
    assert (await store.read(PATH)).version == 1

    ccp.cpm_change(SAFE, OBJECT, content=NEW_SECRET, UserName="AKCCPSERVICE0002")
    changed = await store.read(PATH)

    assert changed.version == 2
    assert dict(changed.data) == {
        "access_key_id": "AKCCPSERVICE0002",
        "secret_access_key": NEW_SECRET,
    }
    assert (await store.read_version(PATH, 2)).get("secret_access_key") == NEW_SECRET
    with pytest.raises(SecretNotFound, match="no older versions"):
        await store.read_version(PATH, 1)


async def test_check_reads_the_check_path(make_store: MakeStore, ccp: CcpDouble) -> None:
    await make_store().check()
    assert ccp.requests[-1].query["Object"] == OBJECT
    ccp.vault_down()
    with pytest.raises(SecretStoreUnavailable):
        await make_store().check()


# --- no secret anywhere ---------------------------------------------------------------------------


async def test_no_secret_or_ccp_error_message_in_logs_errors_or_reprs(
    make_store: MakeStore, ccp: CcpDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = make_store()
    seen: list[str] = [repr(store)]
    secret = await store.read(PATH)
    seen += [repr(secret), str(secret)]
    ccp.cpm_change(SAFE, OBJECT, content=NEW_SECRET)
    seen.append(repr(await store.read(PATH)))
    # ErrorMsg repeats the query and may name the password object: never passed on.
    ccp.add_account(Account(SAFE, "twin", "x", {"UserName": ACCESS_KEY}))
    failing: list[Callable[[], Any]] = [
        lambda: make_store(query={"Safe": SAFE, "UserName": ACCESS_KEY}).read(PATH),
        lambda: make_store(query={"Safe": SAFE, "Object": "nothing"}).read(PATH),
        lambda: make_store(client_cert=None, client_key=None).read(PATH),
        lambda: store.write(PATH, {"secret_access_key": SECRET}, cas=None),
    ]
    for call in failing:
        with pytest.raises(CredbrokerError) as caught:
            await call()
        seen += [str(caught.value), repr(caught.value), caught.value.message]
        assert caught.value.__cause__ is None
    text = "\n".join(seen) + caplog.text
    for leaked in (SECRET, NEW_SECRET, "Password object matching", "Too many password objects"):
        assert leaked not in text


async def test_a_200_that_is_not_ccp_json_is_an_outage_not_a_key(
    make_store: MakeStore, ccp: CcpDouble
) -> None:
    ccp.fail_next(1, 200)  # a proxy's page with status 200, no JSON
    with pytest.raises(SecretStoreUnavailable, match="without a JSON object"):
        await make_store().read(PATH)
    assert (await make_store().read(PATH)).get("secret_access_key") == SECRET
