"""CcpDouble: CyberArk's Central Credential Provider web service on 127.0.0.1, over TLS.

Written from CyberArk's REST GetPassword documentation ("Call the Web Service using REST":
query parameters, result, return codes) and real answers quoted by client libraries (every
value a string, "PasswordChangeInProcess": "False", the account's other properties alongside):

    GET /AIMWebService/api/Accounts?AppID=..&Safe=..[&Folder=Root]&Object=..
        | &UserName=..[&Address=..]   [&Reason=..][&ConnectionTimeout=N]
        [&FailRequestOnPasswordChange=true]

    200  {"Content", "UserName", "Address", "Safe", "Folder", "Name", "PolicyID",
          "PasswordChangeInProcess", <properties>}
    400  AIMWS031E no AppID; AIMWS030E no search criterion; APPAP227E several accounts match;
         APPAP007E the CCP cannot reach the CyberArk Vault (`vault_down()`)
    403  APPAP008E unknown AppID; APPAP306E the application failed its authentication check
         (no client certificate, another one than registered, or a machine not allowed)
    404  APPAP004E no account matches, or the application is not a member of the Safe (CCP
         says "not found" for both)
    500  APPAP282E the CPM is changing the password and FailRequestOnPasswordChange=true

Errors are {"ErrorCode", "ErrorMsg"}. TLS: the server certificate is issued by the double's own
CA (`pki.ca_file` is what a client pins); a client certificate is asked for and, when sent,
must chain to that CA (the handshake fails otherwise, as with IIS); which certificate an AppID
accepts is the application's authentication (the double compares the exact certificate, where
CyberArk compares its serial number, subject or issuer). Anything else: HTTP 404 (IIS).

Outages for the fallback tests: `stop()`/`start()` (connection refused), `hang(s)`,
`fail_next(n, status, code)`, `fail_all(status)`, `vault_down()`. `cpm_change()` is what
CyberArk's CPM does when it rotates a key: the account's secret (and, for a key pair, its key
id) change in place.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.doubles.loopback import LoopbackServer

SERVICE = "AIMWebService"


# --- a small PKI for the double and its clients ------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Issued:
    cert_file: Path
    key_file: Path
    der: bytes

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


class Pki:
    """A throw-away CA in `folder`, issuing the server's and the clients' certificates."""

    def __init__(self, folder: Path, *, name: str = "ccp-double-ca") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = folder / f"{name}.pem"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, server: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        cert_file = self.folder / f"{common_name}.crt"
        key_file = self.folder / f"{common_name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        return Issued(cert_file, key_file, cert.public_bytes(serialization.Encoding.DER))


# --- the vault's content as CCP sees it -----------------------------------------------------------


@dataclass
class Account:
    safe: str
    name: str  # the object name (Object=)
    content: str  # the password (Content)
    properties: dict[str, str] = field(default_factory=dict)  # UserName, Address, ...
    folder: str = "Root"
    policy_id: str = "MinIO-AccessKeys"
    change_in_process: bool = False

    def answer(self) -> dict[str, str]:
        return {
            "Content": self.content,
            "PolicyID": self.policy_id,
            "CreationMethod": "PVWA",
            "Folder": self.folder,
            "Name": self.name,
            "Safe": self.safe,
            "DeviceType": "Cloud Service",
            **self.properties,
            "PasswordChangeInProcess": "True" if self.change_in_process else "False",
        }


@dataclass
class Application:
    """An AppID: its authentication (client certificate fingerprints, allowed machines; none
    of either means any caller passes) and the Safes it is a member of."""

    certificates: set[str] = field(default_factory=set)
    machines: set[str] = field(default_factory=set)
    safes: set[str] = field(default_factory=set)


@dataclass
class Request:
    """What a request asked (for assertions): its query and the client certificate's
    fingerprint, if one was sent."""

    query: dict[str, str]
    certificate: str | None
    status: int = 0


class CcpDouble(LoopbackServer):
    def __init__(self, pki: Pki) -> None:
        super().__init__()
        self.pki = pki
        self._server_cert = pki.issue("ccp-double-server", server=True)
        self.accounts: list[Account] = []
        self.applications: dict[str, Application] = {}
        self.requests: list[Request] = []
        self._clients: dict[str, Issued] = {}
        self._hang = 0.0
        self._failures: list[tuple[int, str]] = []
        self._failing: tuple[int, str] | None = None
        self._vault_down = False

    # --- lifecycle: tests/doubles/loopback.py, over TLS ---------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.pki.ca_file))
        context.load_cert_chain(str(self._server_cert.cert_file), str(self._server_cert.key_file))
        context.verify_mode = ssl.CERT_OPTIONAL  # asked for; the AppID decides if it must be
        return context

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._port}"

    # --- set-up and behaviour ----------------------------------------------------------------

    def add_application(
        self,
        app_id: str,
        *,
        safes: set[str],
        certificates: set[str] = frozenset(),  # type: ignore[assignment]
        machines: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        self.applications[app_id] = Application(set(certificates), set(machines), set(safes))

    def client_for(self, app_id: str, *, safes: set[str]) -> Issued:
        """A client certificate the AppID accepts (issued and registered once)."""
        if app_id not in self._clients:
            issued = self.pki.issue(f"{app_id}-client")
            self.add_application(app_id, safes=safes, certificates={issued.fingerprint})
            self._clients[app_id] = issued
        return self._clients[app_id]

    def add_account(self, account: Account) -> Account:
        self.accounts.append(account)
        return account

    def account(self, safe: str, name: str) -> Account:
        return next(a for a in self.accounts if (a.safe, a.name) == (safe, name))

    def cpm_change(self, safe: str, name: str, *, content: str, **properties: str) -> None:
        """What the CPM's change task leaves behind: a new password (and any property the
        plug-in updates, e.g. a new access key id), LastSuccessChange now."""
        account = self.account(safe, name)
        account.content = content
        account.properties.update(properties)
        account.properties["LastSuccessChange"] = str(
            int(datetime.datetime.now(datetime.UTC).timestamp())
        )
        account.properties["LastTask"] = "ChangeTask"
        account.properties["CPMStatus"] = "success"
        account.change_in_process = False

    def hang(self, seconds: float) -> None:
        self._hang = seconds

    def fail_next(self, n: int, status: int, code: str = "") -> None:
        self._failures.extend([(status, code)] * n)

    def fail_all(self, status: int | None, code: str = "") -> None:
        """Answer every request with `status` (None: answer normally again)."""
        self._failing = None if status is None else (status, code)

    def vault_down(self, down: bool = True) -> None:
        """The CCP answers, but cannot reach the CyberArk Vault behind it (400 APPAP007E)."""
        self._vault_down = down

    # --- GetPassword ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        certificate = _peer_fingerprint(request)
        seen = Request(dict(request.query), certificate)
        self.requests.append(seen)
        if self._hang:
            await asyncio.sleep(self._hang)
        response = self._answer(request, certificate)
        seen.status = response.status
        return response

    def _answer(self, request: web.Request, certificate: str | None) -> web.Response:
        if request.method != "GET" or request.path.lower() != f"/{SERVICE}/api/Accounts".lower():
            return web.Response(status=404, text="Not Found")
        scripted = self._failures.pop(0) if self._failures else self._failing
        if scripted is not None:
            status, code = scripted
            if not code:  # IIS's own answer: no CCP envelope
                return web.Response(status=status, text="Service Unavailable")
            return _error(status, code, "scripted failure")
        query = request.query
        app_id = query.get("AppID")
        if not app_id:
            return _error(400, "AIMWS031E", "Invalid request. The AppID parameter is required.")
        app = self.applications.get(app_id)
        if app is None:
            return _error(403, "APPAP008E", f"ITATS982E User {app_id} is not defined.")
        if (app.certificates and certificate not in app.certificates) or (
            app.machines and request.remote not in app.machines
        ):
            return _error(403, "APPAP306E", f"[{app_id}] failed on authentication check.")
        criteria = {k: query[k] for k in ("Safe", "Object", "UserName", "Address") if k in query}
        if not criteria:
            return _error(400, "AIMWS030E", "Invalid query format.")
        if self._vault_down:
            return _error(400, "APPAP007E", "Connection to the Vault has failed.")
        folder = query.get("Folder", "Root")
        found = [
            a
            for a in self.accounts
            if a.safe in app.safes
            and a.folder.lower() == folder.lower()
            and ("Safe" not in criteria or a.safe == criteria["Safe"])
            and ("Object" not in criteria or a.name == criteria["Object"])
            and all(
                a.properties.get(prop) == criteria[prop]
                for prop in ("UserName", "Address")
                if prop in criteria
            )
        ]
        described = ";".join(f"{k}={v}" for k, v in criteria.items())
        if not found:
            return _error(
                404,
                "APPAP004E",
                f"Password object matching query [{described}] was not found (Diagnostic Info: "
                "5). Please check that there is a password object that answers your query in "
                "the Vault and that both the Provider and the application user have the "
                "appropriate permissions needed in order to use the password.",
            )
        if len(found) > 1:
            return _error(
                400, "APPAP227E", f"Too many password objects matching query [{described}]"
            )
        account = found[0]
        if account.change_in_process and query.get("FailRequestOnPasswordChange", "").lower() in (
            "true",
            "yes",
        ):
            return _error(
                500,
                "APPAP282E",
                f"Password [{account.name}] is currently being changed by the CPM.",
            )
        return web.json_response(account.answer())


def _peer_fingerprint(request: web.Request) -> str | None:
    transport = request.transport
    ssl_object: Any = transport.get_extra_info("ssl_object") if transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return hashlib.sha256(der).hexdigest() if der else None


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"ErrorCode": code, "ErrorMsg": message}, status=status)
