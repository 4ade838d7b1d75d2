"""MinioAdminDouble: a small HTTP server on 127.0.0.1 that speaks the part of MinIO's API the
rotation driver and key probe use, the way MinIO does.

Written from MinIO's source (minio/minio cmd/admin-handlers-users.go, cmd/admin-router.go,
cmd/api-errors.go, cmd/signature-v4.go; minio/madmin-go user-commands.go for the JSON shapes)
and minio-py's minioadmin.py / crypto.py (what MinioAdmin actually sends). Implemented:

    PUT    /minio/admin/v3/add-service-account            AddServiceAccountReq, encrypted
    GET    /minio/admin/v3/list-service-accounts?user=U   ListServiceAccountsResp, encrypted
    DELETE /minio/admin/v3/delete-service-account?accessKey=K   204
    PUT    /minio/admin/v3/add-user?accessKey=U           {"status","secretKey"}, encrypted
    GET    /minio/admin/v3/user-info?accessKey=U          UserInfo, plain JSON
    GET    /minio/admin/v3/list-users                     {user: UserInfo}, encrypted
    PUT    /minio/admin/v3/set-user-status?accessKey=U&status=enabled|disabled
    POST   /minio/admin/v3/idp/builtin/policy/attach      {"policies","user"}, encrypted both ways
    GET    /                                               S3 ListBuckets (the key probe; STS
                                                           keys too, with their session token)
    POST   /  Action=AssumeRole                            STS (SigV4 service "sts"), AWS XML

STS as MinIO does it (cmd/sts-handlers.go checkAssumeRoleAuth; cmd/iam-store.go): only a
built-in user's own key may AssumeRole (an access key or STS key: 403 AccessDenied). A vended
key is authorised through its parent user: it keeps working after the parent's secret changes
(add-user on an existing user replaces only its secret and status), is denied while the parent
is disabled (policyDBGet finds no policy for an invalid user), and expires.

Every request must carry a valid AWS SigV4 signature (service s3), checked here from scratch
(not with the client's signer): unknown key -> 403 InvalidAccessKeyId, wrong signature -> 403
SignatureDoesNotMatch. The admin API accepts any signing region (MinIO validates admin calls
with region ""). Request and response bodies of add/list are encrypted with the requester's
secret key (Argon2id + AES-GCM, minio/crypto.py, reused here); a body that does not decrypt is
400 XMinioAdminConfigBadJSON. Admin errors are JSON {"Code", "Message", "Resource",
"RequestId", "HostId"}; S3 errors are XML.

Permissions, as MinIO checks them: a user may create, list and delete its own access keys
(deny-only policy check); for another user's keys it needs admin rights (here: the root user or
a user in `admins`). An access key may act for its parent user; the root user may hold access
keys like any user. A key of another user is "not found" on delete (404
XMinioInvalidIAMCredentials, as MinIO answers to mitigate brute force).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import secrets
import string
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote

from aiohttp import web
from minio.crypto import decrypt, encrypt

from tests.doubles.loopback import LoopbackServer

_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
_ADMIN_PREFIX = "/minio/admin/v3/"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NOT_FOUND = "XMinioInvalidIAMCredentials"  # cmd/api-errors.go, ErrAdminServiceAccountNotFound


class _Denied(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Key:
    secret: str
    parent: str | None = None  # None: a user's own key; else an access key (or STS key) of it
    status: str = "on"
    session_token: str | None = None  # STS keys only
    expires: datetime | None = None  # STS keys only
    policies: list[str] = field(default_factory=list)  # built-in users only
    name: str = ""
    description: str = ""
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


class MinioAdminDouble(LoopbackServer):
    def __init__(
        self,
        *,
        root_access_key: str = "minioroot",
        root_secret_key: str = "minioroot-secret-key",  # noqa: S107 - a test double's
        region: str = "us-east-1",
    ) -> None:
        super().__init__()
        self.root_access_key = root_access_key
        self.region = region
        self.admins: set[str] = set()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request seen
        self.fail_next_status: list[int] = []  # answer the next requests with these statuses
        self._keys: dict[str, _Key] = {root_access_key: _Key(root_secret_key)}

    @property
    def endpoint(self) -> str:
        return self.base_url

    # --- controls and views for tests -----------------------------------------------------

    def add_user(self, access_key: str, secret_key: str, *, admin: bool = False) -> None:
        """A built-in user (`mc admin user add`)."""
        self._keys[access_key] = _Key(secret_key)
        if admin:
            self.admins.add(access_key)

    def access_keys(self, user: str) -> list[str]:
        """`mc admin accesskey ls USER`: the user's access keys."""
        return sorted(
            k for k, v in self._keys.items() if v.parent == user and v.session_token is None
        )

    def secret_of(self, access_key: str) -> str:
        return self._keys[access_key].secret

    def users(self) -> list[str]:
        """`mc admin user ls`: built-in users (not the root user)."""
        return sorted(k for k, v in self._keys.items() if self._is_user(k, v))

    def user_policies(self, user: str) -> list[str]:
        return list(self._keys[user].policies)

    def sts_keys(self, user: str) -> list[str]:
        return sorted(k for k, v in self._keys.items() if v.parent == user and v.session_token)

    # --- HTTP -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        admin = request.path.startswith(_ADMIN_PREFIX)
        body = await request.read()
        if self.fail_next_status:
            status = self.fail_next_status.pop(0)
            return _admin_error(status, "XMinioServerNotInitialized", "injected", request.path)
        try:
            sts = not admin and request.method == "POST" and request.path == "/"
            requester = self._authenticate(request, body, admin=admin, sts=sts)
            if sts:
                return self._assume_role(requester, body)
            if not admin:
                if request.method == "GET" and request.path == "/":
                    self._check_session(request, requester)
                    return _list_buckets(requester)
                raise _Denied(501, "NotImplemented", "the double only serves ListBuckets")
            command = request.path[len(_ADMIN_PREFIX) :]
            handler = {
                ("PUT", "add-service-account"): self._add,
                ("GET", "list-service-accounts"): self._list,
                ("DELETE", "delete-service-account"): self._delete,
                ("PUT", "add-user"): self._add_user,
                ("GET", "user-info"): self._user_info,
                ("GET", "list-users"): self._list_users,
                ("PUT", "set-user-status"): self._set_user_status,
                ("POST", "idp/builtin/policy/attach"): self._attach_policy,
            }.get((request.method, command))
            if handler is None:
                raise _Denied(400, "XMinioAdminInvalidArgument", "not implemented by the double")
            return await handler(request, requester, body)
        except _Denied as denied:
            if admin:
                return _admin_error(denied.status, denied.code, denied.message, request.path)
            if request.method == "POST" and request.path == "/":
                # cmd/sts-handlers.go apiToSTSError: STS answers every authentication failure
                # (unknown key, wrong signature, disabled key) as AccessDenied.
                code = "AccessDenied" if denied.status == 403 else denied.code
                return _sts_error(denied.status, code, denied.message)
            return _s3_error(denied.status, denied.code, denied.message)

    # --- users (cmd/admin-handlers-users.go) and their STS keys (cmd/sts-handlers.go) -------

    async def _add_user(self, request: web.Request, requester: str, body: bytes) -> web.Response:
        access_key = request.query.get("accessKey", "")
        actor = self._user_of(requester)
        existing = self._keys.get(access_key)
        if (
            not access_key
            or access_key == self.root_access_key
            or (existing is not None and existing.parent is not None)
            or self._keys[requester].parent is not None  # an access key or STS key asking
        ):
            raise _Denied(400, "XMinioAdminInvalidArgument", "Invalid arguments specified.")
        if access_key != actor and not self._is_admin(actor):  # one's own secret: allowed
            raise _Denied(403, "AccessDenied", "Access Denied.")
        req = await self._decrypted(body, requester)
        secret = str(req.get("secretKey") or "")
        if not 8 <= len(secret) <= 40:
            raise _Denied(400, "XMinioAdminInvalidSecretKey", "bad secret key length")
        status = "on" if req.get("status") == "enabled" else "off"
        # IAMStoreSys.AddUser: the user's own identity only; policies and STS keys stay.
        policies = existing.policies if existing is not None else []
        self._keys[access_key] = _Key(secret, status=status, policies=policies)
        return web.Response(status=200)

    async def _user_info(self, request: web.Request, requester: str, body: bytes) -> web.Response:
        name = request.query.get("accessKey", "")
        actor = self._user_of(requester)
        if name != actor and not self._is_admin(actor):
            raise _Denied(403, "AccessDenied", "Access Denied.")
        key = self._keys.get(name)
        if key is None or not self._is_user(name, key):
            raise _Denied(404, "XMinioAdminNoSuchUser", f"The specified user {name} does not exist")
        return web.json_response(_user_info(key))

    async def _list_users(self, request: web.Request, requester: str, body: bytes) -> web.Response:
        if not self._is_admin(self._user_of(requester)):
            raise _Denied(403, "AccessDenied", "Access Denied.")
        users = {name: _user_info(self._keys[name]) for name in self.users()}
        return await _encrypted(users, self._keys[requester].secret)

    async def _set_user_status(
        self, request: web.Request, requester: str, body: bytes
    ) -> web.Response:
        if not self._is_admin(self._user_of(requester)):
            raise _Denied(403, "AccessDenied", "Access Denied.")
        name, status = request.query.get("accessKey", ""), request.query.get("status", "")
        key = self._keys.get(name)
        if key is None or not self._is_user(name, key):
            raise _Denied(404, "XMinioAdminNoSuchUser", f"The specified user {name} does not exist")
        if status not in ("enabled", "disabled"):
            raise _Denied(400, "XMinioAdminInvalidArgument", "Invalid arguments specified.")
        key.status = "on" if status == "enabled" else "off"
        return web.Response(status=200)

    async def _attach_policy(
        self, request: web.Request, requester: str, body: bytes
    ) -> web.Response:
        if not self._is_admin(self._user_of(requester)):
            raise _Denied(403, "AccessDenied", "Access Denied.")
        req = await self._decrypted(body, requester)
        name, wanted = str(req.get("user") or ""), [str(p) for p in req.get("policies") or []]
        key = self._keys.get(name)
        if key is None or not self._is_user(name, key):
            raise _Denied(404, "XMinioAdminNoSuchUser", f"The specified user {name} does not exist")
        added = [p for p in wanted if p not in key.policies]
        if not added:
            raise _Denied(400, "XMinioAdminPolicyChangeAlreadyApplied", "already attached")
        key.policies.extend(added)
        answer = {"policiesAttached": added, "updatedAt": datetime.now(UTC).isoformat()}
        return await _encrypted(answer, self._keys[requester].secret)

    def _assume_role(self, requester: str, body: bytes) -> web.Response:
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        if form.get("Action") != "AssumeRole" or form.get("Version") != "2011-06-15":
            raise _Denied(400, "InvalidParameterValue", "unsupported STS action or version")
        if self._keys[requester].parent is not None:
            # "Temporary credentials or Service accounts cannot generate further temporary
            # credentials" (checkAssumeRoleAuth).
            raise _Denied(403, "AccessDenied", "Access denied")
        duration = int(form.get("DurationSeconds") or 3600)
        if not 900 <= duration <= 604800 or len(form.get("Policy", "")) > 2048:
            raise _Denied(400, "InvalidParameterValue", "bad DurationSeconds or Policy")
        access_key = "".join(secrets.choice(_ALPHABET) for _ in range(20))
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
        token = secrets.token_urlsafe(48)
        expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=duration)
        self._keys[access_key] = _Key(
            secret, parent=requester, session_token=token, expires=expires
        )
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleResult><AssumedRoleUser><Arn></Arn><AssumeRoleId></AssumeRoleId>"
            f"</AssumedRoleUser><Credentials><AccessKeyId>{access_key}</AccessKeyId>"
            f"<SecretAccessKey>{secret}</SecretAccessKey><SessionToken>{token}</SessionToken>"
            f"<Expiration>{expires.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration></Credentials>"
            "</AssumeRoleResult><ResponseMetadata>"
            f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></ResponseMetadata>"
            "</AssumeRoleResponse>"
        )
        return web.Response(text=xml, content_type="application/xml")

    def _check_session(self, request: web.Request, requester: str) -> None:
        """An STS key needs its session token, must not be expired, and its parent user must
        be enabled (its policies are the parent's)."""
        key = self._keys[requester]
        if key.session_token is None:
            return
        if request.headers.get("x-amz-security-token") != key.session_token:
            raise _Denied(
                403, "InvalidTokenId", "The security token included in the request is invalid"
            )
        if key.expires is not None and key.expires <= datetime.now(UTC):
            raise _Denied(400, "ExpiredToken", "The provided token has expired.")
        parent = self._keys.get(key.parent or "")
        if parent is None or parent.status != "on":
            raise _Denied(403, "AccessDenied", "Access Denied.")

    async def _decrypted(self, body: bytes, requester: str) -> dict[str, Any]:
        try:
            plain = await asyncio.to_thread(decrypt, _Readable(body), self._keys[requester].secret)  # type: ignore[arg-type]
            value = json.loads(plain)
        except (ValueError, OSError) as exc:
            raise _Denied(400, "XMinioAdminConfigBadJSON", f"bad body ({exc})") from None
        if not isinstance(value, dict):
            raise _Denied(400, "XMinioAdminConfigBadJSON", "not an object")
        return value

    def _is_user(self, name: str, key: _Key) -> bool:
        return key.parent is None and name != self.root_access_key

    async def _add(self, request: web.Request, requester: str, body: bytes) -> web.Response:
        secret = self._keys[requester].secret
        try:
            plain = await asyncio.to_thread(decrypt, _Readable(body), secret)  # type: ignore[arg-type]
            req = json.loads(plain)
        except (ValueError, OSError) as exc:
            raise _Denied(400, "XMinioAdminConfigBadJSON", f"bad body ({exc})") from None
        target = req.get("targetUser") or requester
        actor = self._user_of(requester)
        if target == requester and self._keys[requester].parent is not None:
            target = actor  # an access key creates keys for its parent
        if target != actor and not self._is_admin(actor):
            raise _Denied(403, "AccessDenied", "Access Denied.")
        if target not in self._keys or self._keys[target].parent is not None:
            raise _Denied(
                400, "XMinioAdminNoSuchUser", f"Specified target user {target} does not exist"
            )
        access_key = req.get("accessKey") or "".join(secrets.choice(_ALPHABET) for _ in range(20))
        secret_key = req.get("secretKey") or "".join(
            secrets.choice(_SECRET_ALPHABET) for _ in range(40)
        )
        if access_key in self._keys:
            raise _Denied(409, "XMinioAdminServiceAccountExists", "access key exists")
        self._keys[access_key] = _Key(
            secret_key,
            parent=target,
            status="off" if req.get("status") == "off" else "on",
            name=str(req.get("name") or ""),
            description=str(req.get("description") or ""),
        )
        answer = {
            "credentials": {
                "accessKey": access_key,
                "secretKey": secret_key,
                "expiration": "1970-01-01T00:00:00Z",
            }
        }
        return await _encrypted(answer, secret)

    async def _list(self, request: web.Request, requester: str, body: bytes) -> web.Response:
        actor = self._user_of(requester)
        user = request.query.get("user") or actor
        if user != actor and not self._is_admin(actor):
            raise _Denied(403, "AccessDenied", "Access Denied.")
        accounts = [
            {
                "parentUser": key.parent,
                "accountStatus": key.status,
                "impliedPolicy": True,
                "accessKey": access_key,
                **({"name": key.name} if key.name else {}),
                **({"description": key.description} if key.description else {}),
                "expiration": "1970-01-01T00:00:00Z",
            }
            for access_key, key in sorted(self._keys.items())
            if key.parent == user and key.session_token is None
        ]
        return await _encrypted({"accounts": accounts}, self._keys[requester].secret)

    async def _delete(self, request: web.Request, requester: str, body: bytes) -> web.Response:
        access_key = request.query.get("accessKey", "")
        if not access_key:
            raise _Denied(400, "XMinioAdminInvalidArgument", "accessKey is required")
        key = self._keys.get(access_key)
        actor = self._user_of(requester)
        if (
            key is None
            or key.parent is None
            or key.session_token is not None
            or (key.parent != actor and not self._is_admin(actor))
        ):
            raise _Denied(
                404, "XMinioInvalidIAMCredentials", "The specified service account is not found"
            )
        del self._keys[access_key]
        return web.Response(status=204)

    # --- SigV4, from the spec ---------------------------------------------------------------

    def _authenticate(self, request: web.Request, body: bytes, *, admin: bool, sts: bool) -> str:
        header = request.headers.get("Authorization", "")
        if not header.startswith("AWS4-HMAC-SHA256 "):
            raise _Denied(403, "AccessDenied", "Access Denied.")
        try:
            parts = dict(
                p.strip().split("=", 1) for p in header[len("AWS4-HMAC-SHA256 ") :].split(",")
            )
            access_key, date, region, service, terminal = parts["Credential"].split("/")
            signed_headers = parts["SignedHeaders"].split(";")
            signature = parts["Signature"]
        except (KeyError, ValueError):
            raise _Denied(400, "AuthorizationHeaderMalformed", "malformed") from None
        key = self._keys.get(access_key)
        if key is None or key.status != "on":
            raise _Denied(
                403,
                "InvalidAccessKeyId",
                "The Access Key Id you provided does not exist in our records.",
            )
        if service != ("sts" if sts else "s3") or terminal != "aws4_request":
            raise _Denied(403, "SignatureDoesNotMatch", "bad scope")
        if not admin and region != self.region:
            raise _Denied(400, "AuthorizationHeaderMalformed", f"region must be {self.region}")
        amz_date = request.headers.get("x-amz-date", "")
        try:
            when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise _Denied(403, "AccessDenied", "missing x-amz-date") from None
        if abs(datetime.now(UTC) - when) > timedelta(minutes=15) or amz_date[:8] != date:
            raise _Denied(403, "RequestTimeTooSkewed", "clock skew")
        # Signed into the request, or (SigV4 outside S3, e.g. STS) the body's hash itself.
        payload_hash = (
            request.headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
        )
        if payload_hash != "UNSIGNED-PAYLOAD" and payload_hash != hashlib.sha256(body).hexdigest():
            raise _Denied(400, "XAmzContentSHA256Mismatch", "payload hash mismatch")
        if "host" not in signed_headers:
            raise _Denied(403, "AccessDenied", "host must be signed")
        canonical_headers = "".join(
            f"{name}:{' '.join(request.headers.get(name, '').split())}\n" for name in signed_headers
        )
        query = sorted(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True))
        canonical_query = "&".join(f"{_uri(k)}={_uri(v)}" for k, v in query)
        canonical = "\n".join(
            [
                request.method,
                request.rel_url.raw_path or "/",
                canonical_query,
                canonical_headers,
                ";".join(signed_headers),
                payload_hash or _EMPTY_SHA256,
            ]
        )
        scope = f"{date}/{region}/{service}/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        signing_key = ("AWS4" + key.secret).encode()
        for part in (date, region, service, "aws4_request"):
            signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise _Denied(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )
        return access_key

    def _user_of(self, access_key: str) -> str:
        return self._keys[access_key].parent or access_key

    def _is_admin(self, user: str) -> bool:
        return user == self.root_access_key or user in self.admins


class _Readable:
    """What minio.crypto.decrypt expects from a urllib3 response."""

    def __init__(self, data: bytes) -> None:
        self._io = io.BytesIO(data)

    def read(self, amount: int = -1) -> bytes:
        return self._io.read(amount)

    def close(self) -> None:
        return None

    def release_conn(self) -> None:
        return None


def _uri(value: str) -> str:
    return quote(value, safe="-_.~")


async def _encrypted(answer: dict[str, Any], secret: str) -> web.Response:
    data = await asyncio.to_thread(encrypt, json.dumps(answer).encode(), secret)
    return web.Response(body=data, content_type="application/octet-stream")


def _admin_error(status: int, code: str, message: str, resource: str) -> web.Response:
    body = {
        "Code": code,
        "Message": message,
        "Resource": resource,
        "RequestId": uuid.uuid4().hex[:16].upper(),
        "HostId": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
    }
    return web.json_response(body, status=status)


def _s3_error(status: int, code: str, message: str) -> web.Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>/</Resource>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    )
    return web.Response(status=status, text=xml, content_type="application/xml")


def _sts_error(status: int, code: str, message: str) -> web.Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<Error><Type></Type><Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, text=xml, content_type="application/xml")


def _user_info(key: _Key) -> dict[str, Any]:
    """madmin.UserInfo as user-info and list-users answer it (never the secret)."""
    return {
        "policyName": ",".join(key.policies),
        "status": "enabled" if key.status == "on" else "disabled",
        "updatedAt": key.created.isoformat(),
    }


def _list_buckets(owner: str) -> web.Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Owner><ID>{owner}</ID><DisplayName>minio</DisplayName></Owner><Buckets></Buckets>"
        "</ListAllMyBucketsResult>"
    )
    return web.Response(text=xml, content_type="application/xml")
