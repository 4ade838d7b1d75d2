"""MinioAdminDouble: a small HTTP server on 127.0.0.1 that speaks the part of MinIO's API the
rotation driver, the key probe and vended keys use, the way MinIO does.

Written from MinIO's source (minio/minio cmd/admin-handlers-users.go, cmd/admin-router.go,
cmd/api-errors.go, cmd/signature-v4*.go, cmd/auth-handler.go, cmd/sts-handlers.go,
cmd/iam.go, cmd/iam-store.go, cmd/bucket-handlers.go, cmd/bucket-listobjects-handlers.go,
cmd/object-handlers.go, cmd/bucket-policy.go; minio/madmin-go user-commands.go for the JSON
shapes; minio/pkg v3.1.3 policy, ported in tests/doubles/minio_policy.py) and minio-py's
minioadmin.py / crypto.py (what MinioAdmin actually sends). Implemented:

    PUT    /minio/admin/v3/add-service-account            AddServiceAccountReq, encrypted
    GET    /minio/admin/v3/list-service-accounts?user=U   ListServiceAccountsResp, encrypted
    DELETE /minio/admin/v3/delete-service-account?accessKey=K   204
    PUT    /minio/admin/v3/add-user?accessKey=U           {"status","secretKey"}, encrypted
    GET    /minio/admin/v3/user-info?accessKey=U          UserInfo, plain JSON
    GET    /minio/admin/v3/list-users                     {user: UserInfo}, encrypted
    PUT    /minio/admin/v3/set-user-status?accessKey=U&status=enabled|disabled
    POST   /minio/admin/v3/idp/builtin/policy/attach      {"policies","user"}, encrypted both ways
    POST   /minio/admin/v3/revoke-tokens/{builtin|ldap}?user=U&tokenRevokeType=T|fullRevoke=true
                                                           204 (RELEASE.2025-04-03 and later)
    POST   /  Action=AssumeRole                            STS (SigV4 service "sts"), AWS XML
    GET    /                                               ListBuckets
    GET    /B?list-type=2   /B   /B?uploads                ListObjectsV2, ListObjects (v1),
                                                           ListMultipartUploads
    GET HEAD PUT DELETE  /B/KEY                            GetObject, HeadObject, PutObject,
                                                           DeleteObject

S3 is path-style, signed in the Authorization header or presigned in the query string (SigV4
only), with S3 XML errors. Controls for tests: add_user, set_policy, attach, make_bucket,
put_object, advance (the double's clock), sts_duration_override (MINIO_STS_DURATION).

Authentication (cmd/signature-v4.go, signature-v4-utils.go checkKeyValid, auth-handler.go
checkClaimsFromToken): unknown or disabled key -> 403 InvalidAccessKeyId; an STS key past its
expiry -> 403 InvalidAccessKeyId (IAMSys.CheckKey answers "not ok" for a credential that is no
longer IsValid); a session token missing or wrong -> 403 InvalidTokenId; a wrong signature ->
403 SignatureDoesNotMatch; a presigned URL past X-Amz-Expires -> 403 AccessDenied "Request has
expired". The admin API accepts any signing region; S3 the configured one, ListBuckets any.

Authorisation (cmd/iam.go IsAllowed, IsAllowedSTS, IsAllowedServiceAccount; iam-store.go
policyDBGet): the root user (and its access keys) may do anything; a user acts with the named
policies attached to it, merged; an access key with its parent's (impliedPolicy); an STS key
with its parent's AND its session policy (both must allow, a Deny in either wins); a disabled
parent has no policies, so its STS and access keys are denied every object operation, while
ListBuckets answers 200 with the list filtered (ListBucketsHandler never answers AccessDenied
to a signed-in caller). A parent with no policy can still AssumeRole; the key can do nothing.

Session policies are parsed as populateSessionPolicy does (minio_policy.parse_policy): a policy
MinIO refuses is 400 InvalidParameterValue with MinIO's message, and the 2048 limit applies to
Go's re-marshalled bytes. DurationSeconds: 900 s to 365 days (internal/config/constants.go
MinExpiration/MaxExpiration, openid.GetDefaultExpiration); with `sts_duration_override` set (the
server's MINIO_STS_DURATION) DurationSeconds is ignored and the override is the duration.

Admin API, as before: request and response bodies of add/list are encrypted with the
requester's secret key (Argon2id + AES-GCM, minio/crypto.py, reused here); a body that does not
decrypt is 400 XMinioAdminConfigBadJSON. Admin errors are JSON {"Code", "Message", "Resource",
"RequestId", "HostId"}. A user may create, list and delete its own access keys; for another
user's keys it needs admin rights (here: the root user or a user in `admins`). A key of another
user is "not found" on delete (404 XMinioInvalidIAMCredentials, as MinIO answers to mitigate
brute force). Attaching a policy that was never defined is 404 XMinioAdminNoSuchPolicy
(iam-store.go PolicyDBUpdate: errNoSuchPolicy).

Token revocation (cmd/sts-handlers.go: AssumeRole keeps the form field TokenRevokeType in the
key's claims; cmd/admin-handlers-users.go RevokeTokens, cmd/iam-store.go RevokeTokens,
cmd/user-provider-utils.go getUserWithProvider): `user` with neither `tokenRevokeType` nor
`fullRevoke=true`, or both, is 400 InvalidRequest; another user's tokens need
admin:RemoveServiceAccount (here: an admin), else 403 AccessDenied; provider `ldap` without LDAP,
or any other, is 403 XMinioIAMActionNotAllowed; without `user` the requester's own tokens are
revoked (an STS requester without a type: its own type; none: 400 InvalidArgument). The keys of
that parent with that claim (all of them for fullRevoke) are deleted: the next request with one
is 403 InvalidAccessKeyId, as for any unknown key. The user is not checked to exist (204).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import secrets
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape

from aiohttp import web
from Crypto.Cipher import AES
from minio import crypto as minio_crypto
from minio.crypto import decrypt, encrypt

from tests.doubles.loopback import LoopbackServer
from tests.doubles.minio_policy import (
    DEFAULT_VERSION,
    ParsedPolicy,
    PolicyError,
    go_marshal,
    is_allowed,
    parse_policy,
)

_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
_ADMIN_PREFIX = "/minio/admin/v3/"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNSIGNED = "UNSIGNED-PAYLOAD"
_NOT_FOUND = "XMinioInvalidIAMCredentials"  # cmd/api-errors.go, ErrAdminServiceAccountNotFound
_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_MAX_SKEW = timedelta(minutes=15)  # cmd/globals.go globalMaxSkewTime
# internal/config/constants.go MinExpiration / MaxExpiration (STS durations, in seconds)
MIN_EXPIRATION, MAX_EXPIRATION = 900, 31536000
MAX_SESSION_POLICY = 2048  # cmd/sts-handlers.go maxSTSSessionPolicySize

# minio/pkg v3.1.3 policy/constants.go DefaultPolicies: the canned policies every MinIO has
# (consoleAdmin's admin and kms statements are left out: the double serves no such API).
_CANNED = {
    "readwrite": {"Action": ["s3:*"]},
    "readonly": {"Action": ["s3:GetBucketLocation", "s3:GetObject"]},
    "writeonly": {"Action": ["s3:PutObject"]},
    "consoleAdmin": {"Action": ["s3:*"]},
}


class _Denied(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


# cmd/api-errors.go errorCodes: (status, code, description) of the S3 errors the double uses.
_E = {
    "AccessDenied": (403, "AccessDenied", "Access Denied."),
    "InvalidAccessKeyId": (
        403,
        "InvalidAccessKeyId",
        "The Access Key Id you provided does not exist in our records.",
    ),
    "AccessKeyDisabled": (
        403,
        "InvalidAccessKeyId",
        "Your account is disabled; please contact your administrator.",
    ),
    "SignatureDoesNotMatch": (
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    "InvalidToken": (
        403,
        "InvalidTokenId",
        "The security token included in the request is invalid",
    ),
    "ExpiredPresignRequest": (403, "AccessDenied", "Request has expired"),
    "RequestNotReadyYet": (403, "AccessDenied", "Request is not valid yet"),
    "RequestTimeTooSkewed": (
        403,
        "RequestTimeTooSkewed",
        "The difference between the request time and the server's time is too large.",
    ),
    "MissingDateHeader": (
        400,
        "AccessDenied",
        "AWS authentication requires a valid Date or x-amz-date header",
    ),
    "MalformedDate": (
        400,
        "MalformedDate",
        "Invalid date format header, expected to be in ISO8601, RFC1123 or RFC1123Z time format.",
    ),
    "UnsignedHeaders": (
        400,
        "AccessDenied",
        "There were headers present in the request which were not signed",
    ),
    "ContentSHA256Mismatch": (
        400,
        "XAmzContentSHA256Mismatch",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    ),
    "InvalidQueryParams": (
        400,
        "AuthorizationQueryParametersError",
        "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
        "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
    ),
    "InvalidQuerySignatureAlgo": (
        400,
        "AuthorizationQueryParametersError",
        'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256".',
    ),
    "MalformedPresignedDate": (
        400,
        "AuthorizationQueryParametersError",
        "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
    ),
    "MalformedExpires": (
        400,
        "AuthorizationQueryParametersError",
        "X-Amz-Expires should be a number",
    ),
    "NegativeExpires": (
        400,
        "AuthorizationQueryParametersError",
        "X-Amz-Expires must be non-negative",
    ),
    "MaximumExpires": (
        400,
        "AuthorizationQueryParametersError",
        "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires "
        "must be less than 604800 seconds",
    ),
    "CredMalformed": (
        400,
        "AuthorizationQueryParametersError",
        "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting "
        '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
    ),
    "MissingFields": (400, "MissingFields", "Missing fields in request."),
    "AuthorizationHeaderMalformed": (
        400,
        "AuthorizationHeaderMalformed",
        "The authorization header is malformed; the region is wrong; expecting 'us-east-1'.",
    ),
    "InvalidServiceS3": (
        400,
        "AuthorizationParametersError",
        "Error parsing the Credential/X-Amz-Credential parameter; incorrect service. This "
        'endpoint belongs to "s3".',
    ),
    "InvalidRequestVersion": (
        400,
        "AuthorizationQueryParametersError",
        "Error parsing the X-Amz-Credential parameter; incorrect terminal. This endpoint uses "
        '"aws4_request".',
    ),
    "SignatureVersionNotSupported": (
        400,
        "InvalidRequest",
        "The authorization mechanism you have provided is not supported. Please use "
        "AWS4-HMAC-SHA256.",
    ),
    "NoSuchBucket": (404, "NoSuchBucket", "The specified bucket does not exist"),
    "NoSuchKey": (404, "NoSuchKey", "The specified key does not exist."),
    "NotImplemented": (
        501,
        "NotImplemented",
        "A header you provided implies functionality that is not implemented",
    ),
    "MissingContentLength": (
        411,
        "MissingContentLength",
        "You must provide the Content-Length HTTP header.",
    ),
    "InvalidMaxKeys": (
        400,
        "InvalidArgument",
        "Argument maxKeys must be an integer between 0 and 2147483647",
    ),
}


def _err(name: str) -> _Denied:
    status, code, message = _E[name]
    return _Denied(status, code, message)


@dataclass
class _Key:
    secret: str
    parent: str | None = None  # None: a user's own key; else an access key (or STS key) of it
    status: str = "on"
    session_token: str | None = None  # STS keys only
    expires: datetime | None = None  # STS keys only
    session_policy: ParsedPolicy | None = None  # STS keys only
    revoke_type: str = ""  # STS keys only: the claim tokenRevokeType ("": none)
    policies: list[str] = field(default_factory=list)  # built-in users only
    name: str = ""
    description: str = ""
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class _Object:
    data: bytes
    content_type: str
    modified: datetime

    @property
    def etag(self) -> str:
        return hashlib.md5(self.data, usedforsecurity=False).hexdigest()


@dataclass
class _Sig:
    """SigV4 parameters of a request, from its Authorization header or its query string."""

    access_key: str
    date: str  # the credential scope's date
    region: str
    service: str
    signed_headers: list[str]
    signature: str
    amz_date: datetime
    presigned: bool
    expires: int = 0
    token: str = ""


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
        # The server's MINIO_STS_DURATION, in seconds: AssumeRole then ignores DurationSeconds
        # (internal/config/identity/openid/openid.go GetDefaultExpiration).
        self.sts_duration_override: int | None = None
        # A FIPS build: admin answers encrypted as madmin-go format 0x02 (PBKDF2 + AES-GCM).
        self.fips = False
        self.clock_offset = timedelta(0)  # the double's clock runs this far ahead
        self._keys: dict[str, _Key] = {root_access_key: _Key(root_secret_key)}
        self._policies: dict[str, ParsedPolicy] = {
            name: parse_policy(
                json.dumps(
                    {
                        "Version": DEFAULT_VERSION,
                        "Statement": [{"Effect": "Allow", **doc, "Resource": ["arn:aws:s3:::*"]}],
                    }
                )
            )
            for name, doc in _CANNED.items()
        }
        self._buckets: dict[str, dict[str, _Object]] = {}
        self._bucket_created: dict[str, datetime] = {}

    @property
    def endpoint(self) -> str:
        return self.base_url

    def now(self) -> datetime:
        """The double's clock (UTCNow in MinIO): the wall clock plus `clock_offset`."""
        return datetime.now(UTC) + self.clock_offset

    def advance(self, seconds: float) -> None:
        """Move the double's clock forward: STS keys expire, presigned URLs age. A client
        must then sign with the same clock (RequestTimeTooSkewed otherwise, as on MinIO)."""
        self.clock_offset += timedelta(seconds=seconds)

    # --- controls and views for tests -----------------------------------------------------

    def add_user(self, access_key: str, secret_key: str, *, admin: bool = False) -> None:
        """A built-in user (`mc admin user add`)."""
        self._keys[access_key] = _Key(secret_key)
        if admin:
            self.admins.add(access_key)

    def set_policy(self, name: str, document: str | Mapping[str, Any]) -> None:
        """A named IAM policy (`mc admin policy create`), parsed as MinIO parses it: raises
        minio_policy.PolicyError for a policy MinIO refuses."""
        text = document if isinstance(document, str) else json.dumps(document)
        self._policies[name] = parse_policy(text)

    def attach(self, user: str, *policies: str) -> None:
        """`mc admin policy attach`: the policies must exist (iam-store.go PolicyDBUpdate)."""
        missing = [p for p in policies if p not in self._policies]
        if missing:
            raise KeyError(f"no such policy: {', '.join(missing)}")
        key = self._keys[user]
        key.policies.extend(p for p in policies if p not in key.policies)

    def make_bucket(self, name: str) -> None:
        self._buckets.setdefault(name, {})
        self._bucket_created.setdefault(name, self.now())

    def put_object(
        self, bucket: str, key: str, data: bytes, content_type: str = "binary/octet-stream"
    ) -> None:
        self.make_bucket(bucket)
        self._buckets[bucket][key] = _Object(data, content_type, self.now())

    def objects(self, bucket: str) -> dict[str, bytes]:
        return {k: o.data for k, o in sorted(self._buckets.get(bucket, {}).items())}

    def access_keys(self, user: str) -> list[str]:
        """`mc admin accesskey ls USER`: the user's access keys."""
        return sorted(
            k for k, v in self._keys.items() if v.parent == user and v.session_token is None
        )

    def secret_of(self, access_key: str) -> str:
        return self._keys[access_key].secret

    def set_user_status(self, user: str, enabled: bool) -> None:
        """`mc admin user enable|disable` (IAMStoreSys.SetUserStatus: the user only)."""
        self._keys[user].status = "on" if enabled else "off"

    def users(self) -> list[str]:
        """`mc admin user ls`: built-in users (not the root user)."""
        return sorted(k for k, v in self._keys.items() if self._is_user(k, v))

    def user_policies(self, user: str) -> list[str]:
        return list(self._keys[user].policies)

    def sts_keys(self, user: str) -> list[str]:
        return sorted(k for k, v in self._keys.items() if v.parent == user and v.session_token)

    def sts_expiration(self, access_key: str) -> datetime | None:
        return self._keys[access_key].expires

    def revoke_type_of(self, access_key: str) -> str:
        """The STS key's tokenRevokeType claim ("": none was sent)."""
        return self._keys[access_key].revoke_type

    def session_policy_of(self, access_key: str) -> ParsedPolicy | None:
        return self._keys[access_key].session_policy

    # --- HTTP -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        admin = request.path.startswith(_ADMIN_PREFIX)
        body = await request.read()
        if self.fail_next_status:
            status = self.fail_next_status.pop(0)
            return _admin_error(status, "XMinioServerNotInitialized", "injected", request.path)
        # cmd/sts-handlers.go registerSTSRouter: AssumeRole is a POST / signed with SigV4,
        # a form body and no query string.
        sts = (
            not admin
            and request.method == "POST"
            and request.path == "/"
            and not request.rel_url.raw_query_string
        )
        if sts:
            return self._assume_role(request, body)
        try:
            if not admin:
                return self._s3(request, body)
            requester = self._authenticate_header(request, body, region=None, service="s3")
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
            if (
                handler is None
                and request.method == "POST"
                and command.startswith("revoke-tokens/")
            ):
                handler = self._revoke_tokens  # {userProvider} is any path segment
            if handler is None:
                raise _Denied(400, "XMinioAdminInvalidArgument", "not implemented by the double")
            return await handler(request, requester, body)
        except _Denied as denied:
            if admin:
                return _admin_error(denied.status, denied.code, denied.message, request.path)
            return _s3_error(request, denied)

    # --- users (cmd/admin-handlers-users.go) ---------------------------------------------

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
        return await _encrypted(users, self._keys[requester].secret, fips=self.fips)

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
        if any(p not in self._policies for p in added):
            # iam-store.go PolicyDBUpdate: "validate that new policies to add are defined",
            # before the no-change check.
            raise _Denied(404, "XMinioAdminNoSuchPolicy", "The canned policy does not exist.")
        if not added:
            raise _Denied(
                400,
                "XMinioAdminPolicyChangeAlreadyApplied",
                "The specified policy change is already in effect.",
            )
        key.policies.extend(added)
        answer = {"policiesAttached": added, "updatedAt": self.now().isoformat()}
        return await _encrypted(answer, self._keys[requester].secret, fips=self.fips)

    async def _revoke_tokens(
        self, request: web.Request, requester: str, body: bytes
    ) -> web.Response:
        """cmd/admin-handlers-users.go RevokeTokens, then IAMStoreSys.RevokeTokens."""
        provider = request.path[len(_ADMIN_PREFIX + "revoke-tokens/") :]
        query = request.rel_url.query
        user = query.get("user", "")
        token_type = query.get("tokenRevokeType", "")
        full = query.get("fullRevoke", "") == "true"
        self_revoke = user == ""
        if not self_revoke and provider != "builtin":
            # getUserWithProvider: ldap needs LDAP configured (the double has none); any other
            # provider is not allowed either.
            raise _Denied(403, "XMinioIAMActionNotAllowed", "Specified IAM action is not allowed")
        if (user and not token_type and not full) or (token_type and full):
            raise _Denied(400, "InvalidRequest", "Invalid Request")
        key = self._keys[requester]
        parent = key.parent or requester
        if not self._is_admin(self._user_of(requester)) or self_revoke:
            if not self_revoke and user != parent:
                raise _Denied(403, "AccessDenied", "Access Denied.")
            user = parent
        if self_revoke and not token_type and not full:
            token_type = key.revoke_type if key.session_token is not None else ""
            if not token_type:
                raise _Denied(
                    400,
                    "InvalidArgument",
                    "No token revoke type specified and one could not be inferred from the request",
                )
        for access_key in [
            k
            for k, v in self._keys.items()
            if v.session_token is not None
            and v.parent == user
            and (not token_type or v.revoke_type == token_type)
        ]:
            del self._keys[access_key]
        return web.Response(status=204)

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
        return await _encrypted(answer, secret, fips=self.fips)

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
        return await _encrypted(
            {"accounts": accounts}, self._keys[requester].secret, fips=self.fips
        )

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

    # --- STS AssumeRole (cmd/sts-handlers.go AssumeRole, checkAssumeRoleAuth) ---------------

    def _assume_role(self, request: web.Request, body: bytes) -> web.Response:
        # MinIO checks the signature first but answers its failure only after the form's
        # Version and Action were validated.
        auth_error: _Denied | None = None
        requester = ""
        try:
            if not request.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256"):
                raise _err("AccessDenied")
            requester = self._authenticate_header(request, body, region=self.region, service="sts")
            # "Temporary credentials or Service accounts cannot generate further temporary
            # credentials"; "Session tokens are not allowed in STS AssumeRole requests".
            if self._keys[requester].parent is not None or _session_token(request):
                raise _err("AccessDenied")
        except _Denied as denied:
            auth_error = denied
        form = _form(body)
        version = form.get("Version", "")
        if version != "2011-06-15":
            return _sts_error(
                400,
                "MissingParameter",
                f"Invalid STS API version {version}, expecting 2011-06-15",
            )
        action = form.get("Action", "")
        if action != "AssumeRole":
            return _sts_error(400, "InvalidParameterValue", f"Unsupported action {action}")
        if auth_error is not None:
            # apiToSTSError: every authentication failure is AccessDenied (403), with the
            # S3 error's description as message.
            return _sts_error(403, "AccessDenied", auth_error.message)
        session_policy: ParsedPolicy | None = None
        text = form.get("Policy", "")
        if text:  # stsClaims.populateSessionPolicy
            try:
                session_policy = parse_policy(text)
                if session_policy.version == "":
                    raise PolicyError("Version cannot be empty expecting '2012-10-17'")
                # Only the re-marshalled bytes are measured, not the form value.
                if len(go_marshal(session_policy)) > MAX_SESSION_POLICY:
                    raise PolicyError("Session policy should not exceed 2048 characters")
            except PolicyError as exc:
                return _sts_error(400, "InvalidParameterValue", exc.message)
        try:
            duration = self._sts_duration(form.get("DurationSeconds", ""))
        except ValueError as exc:
            return _sts_error(400, "InvalidParameterValue", str(exc))
        access_key = "".join(secrets.choice(_ALPHABET) for _ in range(20))
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
        token = secrets.token_urlsafe(48)
        # claims[expClaim] = UTCNow().Add(duration).Unix(): whole seconds
        expires = self.now().replace(microsecond=0) + timedelta(seconds=duration)
        self._keys[access_key] = _Key(
            secret,
            parent=requester,
            session_token=token,
            expires=expires,
            session_policy=session_policy,
            revoke_type=form.get("TokenRevokeType", ""),
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

    def _sts_duration(self, dsecs: str) -> int:
        """internal/config/identity/openid/openid.go GetDefaultExpiration: MINIO_STS_DURATION,
        when set, wins over DurationSeconds; either must lie in [900 s, 365 days]."""
        invalid = ValueError("invalid token expiry")  # internal/auth ErrInvalidDuration
        if self.sts_duration_override is None:
            if dsecs == "":
                return 3600
            try:
                seconds = _go_parse_int(dsecs)
            except ValueError:
                raise invalid from None
        else:
            seconds = self.sts_duration_override
        if not MIN_EXPIRATION <= seconds <= MAX_EXPIRATION:
            raise invalid
        return seconds

    # --- SigV4 (cmd/signature-v4.go, signature-v4-parser.go, signature-v4-utils.go) ---------

    def _authenticate_header(
        self, request: web.Request, body: bytes, *, region: str | None, service: str
    ) -> str:
        """A request signed in its Authorization header: the access key, or _Denied."""
        sig = self._parse_header_sig(request, region=region, service=service)
        self._check_key(request, sig)
        self._verify(request, body, sig)
        return sig.access_key

    def _parse_header_sig(self, request: web.Request, *, region: str | None, service: str) -> _Sig:
        # cmd/auth-handler.go setAuthMiddleware: the date and the clock skew come first.
        amz_date = request.headers.get("x-amz-date", "")
        if not amz_date:
            raise _err("MissingDateHeader")
        try:
            when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise _err("MalformedDate") from None
        if abs(self.now() - when) > _MAX_SKEW:
            raise _err("RequestTimeTooSkewed")
        header = request.headers.get("Authorization", "")
        try:
            parts = dict(
                p.strip().split("=", 1) for p in header[len("AWS4-HMAC-SHA256 ") :].split(",")
            )
            credential = parts["Credential"]
            signed_headers = parts["SignedHeaders"].split(";")
            signature = parts["Signature"]
        except (KeyError, ValueError):
            raise _err("MissingFields") from None
        sig = self._parse_credential(credential, region=region, service=service)
        if "host" not in signed_headers:
            raise _err("UnsignedHeaders")
        return _Sig(
            sig[0], sig[1], sig[2], service, signed_headers, signature, when, presigned=False
        )

    def _parse_presigned_sig(self, request: web.Request, *, region: str | None) -> _Sig:
        """signature-v4-parser.go parsePreSignV4."""
        query = request.rel_url.query
        required = (
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Signature",
            "X-Amz-Date",
            "X-Amz-SignedHeaders",
            "X-Amz-Expires",
        )
        if any(name not in query for name in required):
            raise _err("InvalidQueryParams")
        if query["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
            raise _err("InvalidQuerySignatureAlgo")
        access_key, date, cred_region = self._parse_credential(
            query["X-Amz-Credential"], region=region, service="s3"
        )
        try:
            when = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise _err("MalformedPresignedDate") from None
        try:
            expires = _go_parse_int(query["X-Amz-Expires"])
        except ValueError:
            raise _err("MalformedExpires") from None
        if expires < 0:
            raise _err("NegativeExpires")
        if expires > 604800:
            raise _err("MaximumExpires")
        signed_headers = query["X-Amz-SignedHeaders"].split(";")
        return _Sig(
            access_key,
            date,
            cred_region,
            "s3",
            signed_headers,
            query["X-Amz-Signature"],
            when,
            presigned=True,
            expires=expires,
        )

    def _parse_credential(
        self, credential: str, *, region: str | None, service: str
    ) -> tuple[str, str, str]:
        """signature-v4-parser.go parseCredentialHeader: (access key, date, region)."""
        elements = credential.split("/")
        if len(elements) < 5:
            raise _err("CredMalformed")
        *key_parts, date, cred_region, cred_service, terminal = elements
        if region is not None and cred_region != region:
            raise _err("AuthorizationHeaderMalformed")
        if cred_service != service:
            raise _err("InvalidServiceS3")
        if terminal != "aws4_request":
            raise _err("InvalidRequestVersion")
        return "/".join(key_parts), date, cred_region

    def _check_key(self, request: web.Request, sig: _Sig) -> None:
        """signature-v4-utils.go checkKeyValid with auth-handler.go checkClaimsFromToken."""
        key = self._keys.get(sig.access_key)
        if key is None:
            raise _err("InvalidAccessKeyId")
        # IAMSys.CheckKey: ok only if the credential IsValid (enabled, and not expired).
        if key.status != "on":
            raise _err("AccessKeyDisabled")
        if key.expires is not None and key.expires < self.now():
            raise _err("InvalidAccessKeyId")
        token = _session_token(request)
        if key.session_token is None:
            if token:  # "x-amz-security-token should not present for static credentials"
                raise _err("InvalidToken")
        elif not hmac.compare_digest(token.encode(), key.session_token.encode()):
            raise _err("InvalidToken")

    def _verify(self, request: web.Request, body: bytes, sig: _Sig) -> None:
        """doesSignatureMatch / doesPresignedSignatureMatch, then isReqAuthenticated's
        content hash check."""
        key = self._keys[sig.access_key]
        if sig.presigned:
            now = self.now()
            if sig.amz_date > now + _MAX_SKEW:
                raise _err("RequestNotReadyYet")
            if now - sig.amz_date > timedelta(seconds=sig.expires):
                raise _err("ExpiredPresignRequest")
            query = [
                (k, v)
                for k, v in parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)
                if k != "X-Amz-Signature"
            ]
            payload = request.rel_url.query.get(
                "X-Amz-Content-Sha256", request.headers.get("x-amz-content-sha256", _UNSIGNED)
            )
        else:
            query = parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)
            if sig.service == "sts":  # getContentSha256Cksum: STS hashes the body itself
                payload = hashlib.sha256(body).hexdigest()
            else:
                payload = request.headers.get("x-amz-content-sha256", _EMPTY_SHA256)
        # url.Values.Encode: sorted by key, values in order, QueryEscape ('+' -> %20 after).
        query.sort(key=lambda kv: kv[0])
        canonical_query = "&".join(f"{_uri(k)}={_uri(v)}" for k, v in query)
        canonical_headers = "".join(
            f"{name}:{' '.join(request.headers.get(name, '').split())}\n"
            for name in sorted(sig.signed_headers)
        )
        canonical = "\n".join(
            [
                request.method,
                _encode_path(request.path),
                canonical_query,
                canonical_headers,
                ";".join(sig.signed_headers),
                payload,
            ]
        )
        scope = f"{sig.date}/{sig.region}/{sig.service}/aws4_request"
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                sig.amz_date.strftime("%Y%m%dT%H%M%SZ"),
                scope,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        signing_key = ("AWS4" + key.secret).encode()
        for part in (sig.date, sig.region, sig.service, "aws4_request"):
            signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig.signature):
            raise _err("SignatureDoesNotMatch")
        claimed = request.headers.get("x-amz-content-sha256")
        if (
            not sig.presigned
            and claimed
            and claimed not in (_UNSIGNED, hashlib.sha256(body).hexdigest())
        ):
            raise _err("ContentSHA256Mismatch")

    def _s3_credentials(self, request: web.Request, *, region: str | None) -> _Sig:
        """getRequestAuthType + getReqAccessKeyV4: parse the signature and check the key."""
        if "X-Amz-Credential" in request.rel_url.query:
            sig = self._parse_presigned_sig(request, region=region)
        elif request.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256"):
            sig = self._parse_header_sig(request, region=region, service="s3")
        elif "Authorization" in request.headers:
            raise _err("SignatureVersionNotSupported")
        else:
            # Anonymous: no bucket policies in the double, so AuthorizeRequest denies.
            raise _err("AccessDenied")
        self._check_key(request, sig)
        return sig

    # --- authorisation (cmd/iam.go IsAllowed, IsAllowedSTS, IsAllowedServiceAccount) --------

    def _policy_db_get(self, user: str) -> list[ParsedPolicy]:
        """iam-store.go policyDBGet + MergePolicies: a user that is not valid (disabled) has
        no policies; attached names that are not defined are skipped."""
        key = self._keys.get(user)
        if key is None or key.status != "on":
            return []
        return [self._policies[p] for p in key.policies if p in self._policies]

    def _allowed(
        self,
        access_key: str,
        action: str,
        bucket: str,
        obj: str,
        conditions: Mapping[str, list[str]],
    ) -> bool:
        key = self._keys[access_key]
        if access_key == self.root_access_key:
            return True  # the owner
        parent = key.parent
        if key.session_token is not None:
            if parent == self.root_access_key:
                parent_ok = True  # isOwnerDerived
            else:
                policies = self._policy_db_get(parent or "")
                # No mapped policy and no policy claim (AssumeRole sets none): denied.
                parent_ok = bool(policies) and is_allowed(policies, action, bucket, obj, conditions)
            if key.session_policy is not None:
                return parent_ok and is_allowed(
                    [key.session_policy], action, bucket, obj, conditions
                )
            return parent_ok
        if parent is not None:  # an access key with its parent's policies (impliedPolicy)
            if parent == self.root_access_key:
                return True
            policies = self._policy_db_get(parent)
            return bool(policies) and is_allowed(policies, action, bucket, obj, conditions)
        policies = self._policy_db_get(access_key)
        return bool(policies) and is_allowed(policies, action, bucket, obj, conditions)

    def _conditions(
        self, request: web.Request, sig: _Sig, extra_headers: Mapping[str, str] | None = None
    ) -> dict[str, list[str]]:
        """cmd/bucket-policy.go getConditionValues."""
        key = self._keys[sig.access_key]
        username = key.parent or sig.access_key
        if username == self.root_access_key:
            principal = "Account"
        elif key.parent is not None:
            principal = "AssumedRole"  # derived credentials carry claims
        else:
            principal = "User"
        now = self.now()
        args: dict[str, list[str]] = {
            "CurrentTime": [now.strftime("%Y-%m-%dT%H:%M:%SZ")],
            "EpochTime": [str(int(now.timestamp()))],
            "SecureTransport": ["false"],
            "SourceIp": [request.remote or ""],
            "UserAgent": [request.headers.get("User-Agent", "")],
            "Referer": [request.headers.get("Referer", "")],
            "principaltype": [principal],
            "userid": [username],
            "username": [username],
            "versionid": [request.rel_url.query.get("versionId", "")],
            "signatureversion": ["AWS4-HMAC-SHA256"],
            "authType": ["REST-QUERY-STRING" if sig.presigned else "REST-HEADER"],
        }
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(_canonical_header(name), []).append(value)
        for name, value in (extra_headers or {}).items():
            headers[_canonical_header(name)] = [value]  # r.Header.Set
        for name, values in headers.items():
            args.setdefault(name, []).extend(values)
        for name, value in parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True):
            args.setdefault(name, []).append(value)
        return args

    # --- S3 (path-style) --------------------------------------------------------------------

    def _s3(self, request: web.Request, body: bytes) -> web.StreamResponse:
        path, method, query = request.path, request.method, request.rel_url.query
        if path == "/":
            if method == "GET":
                return self._list_buckets(request, body)
            raise _err("NotImplemented")
        bucket, _, obj = path[1:].partition("/")
        if not obj:
            if method != "GET":
                raise _err("NotImplemented")
            if "uploads" in query:
                return self._list_multipart_uploads(request, body, bucket)
            if query.get("list-type") == "2":
                return self._list_objects(request, body, bucket, v2=True)
            if (
                not set(query)
                - {"prefix", "marker", "delimiter", "max-keys", "encoding-type"}
                - {k for k in query if k.startswith("X-Amz-")}
            ):
                return self._list_objects(request, body, bucket, v2=False)
            raise _err("NotImplemented")
        sub = {"uploadId", "partNumber", "uploads", "acl", "tagging", "retention", "legal-hold"}
        if sub & set(query) or "x-amz-copy-source" in request.headers:
            raise _err("NotImplemented")
        if method in ("GET", "HEAD"):
            return self._get_object(request, body, bucket, obj, head=method == "HEAD")
        if method == "PUT":
            return self._put_object(request, body, bucket, obj)
        if method == "DELETE":
            return self._delete_object(request, body, bucket, obj)
        raise _err("NotImplemented")

    def _authorize(
        self,
        request: web.Request,
        body: bytes,
        action: str,
        bucket: str,
        obj: str = "",
    ) -> _Sig:
        """checkRequestAuthType: authenticate (key, then signature), then IsAllowed."""
        sig = self._s3_credentials(request, region=self.region)
        self._verify(request, body, sig)
        if not self._allowed(sig.access_key, action, bucket, obj, self._conditions(request, sig)):
            raise _err("AccessDenied")
        return sig

    def _list_buckets(self, request: web.Request, body: bytes) -> web.Response:
        """cmd/bucket-handlers.go ListBucketsHandler: signed with any region; without
        s3:ListAllMyBuckets the list is filtered to buckets the caller may ListBucket (with
        prefix "" and delimiter "/") or GetBucketLocation, never AccessDenied."""
        sig = self._s3_credentials(request, region=None)
        self._verify(request, body, sig)
        names = sorted(self._buckets)
        conditions = self._conditions(request, sig)
        if not self._allowed(sig.access_key, "s3:ListAllMyBuckets", "", "", conditions):
            listing = self._conditions(request, sig, {"prefix": "", "delimiter": "/"})
            names = [
                b
                for b in names
                if self._allowed(sig.access_key, "s3:ListBucket", b, "", listing)
                or self._allowed(sig.access_key, "s3:GetBucketLocation", b, "", listing)
            ]
        owner = self._keys[sig.access_key].parent or sig.access_key
        buckets = "".join(
            f"<Bucket><Name>{escape(b)}</Name>"
            f"<CreationDate>{_s3_time(self._bucket_created[b])}</CreationDate></Bucket>"
            for b in names
        )
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<ListAllMyBucketsResult xmlns="{_S3_NS}">'
            f"<Owner><ID>{escape(owner)}</ID><DisplayName>minio</DisplayName></Owner>"
            f"<Buckets>{buckets}</Buckets></ListAllMyBucketsResult>"
        )
        return web.Response(text=xml, content_type="application/xml")

    def _objects_of(self, bucket: str) -> dict[str, _Object]:
        objects = self._buckets.get(bucket)
        if objects is None:
            raise _err("NoSuchBucket")
        return objects

    def _list_objects(
        self, request: web.Request, body: bytes, bucket: str, *, v2: bool
    ) -> web.Response:
        """cmd/bucket-listobjects-handlers.go ListObjectsV2Handler / ListObjectsV1Handler:
        authorised as s3:ListBucket on the bucket, the query (prefix, delimiter, max-keys)
        being the condition values."""
        self._authorize(request, body, "s3:ListBucket", bucket)
        query = request.rel_url.query
        objects = self._objects_of(bucket)
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        try:
            max_keys = int(query.get("max-keys", "1000"))
        except ValueError:
            raise _err("InvalidMaxKeys") from None
        if max_keys < 0:
            raise _err("InvalidMaxKeys")
        max_keys = min(max_keys, 1000)
        if v2:
            token = query.get("continuation-token", "")
            marker = base64.b64decode(token).decode() if token else query.get("start-after", "")
        else:
            marker = query.get("marker", "")
        contents: list[tuple[str, _Object]] = []
        prefixes: list[str] = []
        truncated, last = False, ""
        for name in sorted(objects):
            if not name.startswith(prefix) or name <= marker:
                continue
            common = ""
            if delimiter:
                cut = name.find(delimiter, len(prefix))
                if cut >= 0:
                    common = name[: cut + len(delimiter)]
            if common and common in prefixes:
                continue
            if common and common <= marker:
                continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            if common:
                prefixes.append(common)
                last = common
            else:
                contents.append((name, objects[name]))
                last = name
        items = "".join(
            f"<Contents><Key>{escape(name)}</Key>"
            f"<LastModified>{_s3_time(o.modified)}</LastModified>"
            f"<ETag>&quot;{o.etag}&quot;</ETag><Size>{len(o.data)}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
            for name, o in contents
        ) + "".join(
            f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes
        )
        head = (
            f'<ListBucketResult xmlns="{_S3_NS}"><Name>{escape(bucket)}</Name>'
            f"<Prefix>{escape(prefix)}</Prefix>"
        )
        if v2:
            next_token = base64.b64encode(last.encode()).decode() if truncated else ""
            meta = (
                f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>"
                f"<MaxKeys>{max_keys}</MaxKeys><Delimiter>{escape(delimiter)}</Delimiter>"
                f"<IsTruncated>{str(truncated).lower()}</IsTruncated>"
                + (
                    f"<NextContinuationToken>{next_token}</NextContinuationToken>"
                    if truncated
                    else ""
                )
            )
        else:
            meta = (
                f"<Marker>{escape(marker)}</Marker>"
                + (f"<NextMarker>{escape(last)}</NextMarker>" if truncated else "")
                + f"<MaxKeys>{max_keys}</MaxKeys><Delimiter>{escape(delimiter)}</Delimiter>"
                f"<IsTruncated>{str(truncated).lower()}</IsTruncated>"
            )
        xml = f'<?xml version="1.0" encoding="UTF-8"?>\n{head}{meta}{items}</ListBucketResult>'
        return web.Response(text=xml, content_type="application/xml")

    def _list_multipart_uploads(
        self, request: web.Request, body: bytes, bucket: str
    ) -> web.Response:
        """cmd/bucket-handlers.go ListMultipartUploadsHandler: s3:ListBucketMultipartUploads
        on the bucket. The double keeps no multipart uploads, so the list is empty."""
        self._authorize(request, body, "s3:ListBucketMultipartUploads", bucket)
        self._objects_of(bucket)
        prefix = request.rel_url.query.get("prefix", "")
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<ListMultipartUploadsResult xmlns="{_S3_NS}"><Bucket>{escape(bucket)}</Bucket>'
            "<KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>"
            f"<Prefix>{escape(prefix)}</Prefix><MaxUploads>1000</MaxUploads>"
            "<IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"
        )
        return web.Response(text=xml, content_type="application/xml")

    def _get_object(
        self, request: web.Request, body: bytes, bucket: str, obj: str, *, head: bool
    ) -> web.Response:
        """cmd/object-handlers.go getObjectHandler / headObjectHandler: authenticate, then
        authorise s3:GetObject (AccessDenied whether or not the object exists), then
        NoSuchBucket / NoSuchKey."""
        self._authorize(request, body, "s3:GetObject", bucket, obj)
        found = self._objects_of(bucket).get(obj)
        if found is None:
            raise _err("NoSuchKey")
        headers = {
            "ETag": f'"{found.etag}"',
            "Last-Modified": found.modified.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "Content-Type": found.content_type,
            "Accept-Ranges": "bytes",
        }
        if head:
            headers["Content-Length"] = str(len(found.data))
            return web.Response(status=200, headers=headers)
        return web.Response(status=200, body=found.data, headers=headers)

    def _put_object(self, request: web.Request, body: bytes, bucket: str, obj: str) -> web.Response:
        """cmd/object-handlers.go PutObjectHandler: Content-Length required; isPutActionAllowed
        (key, then s3:PutObject) comes before the signature is verified; x-amz-acl is never
        read."""
        if request.content_length is None:
            raise _err("MissingContentLength")
        sig = self._s3_credentials(request, region=self.region)
        if not self._allowed(
            sig.access_key, "s3:PutObject", bucket, obj, self._conditions(request, sig)
        ):
            raise _err("AccessDenied")
        self._verify(request, body, sig)
        objects = self._objects_of(bucket)
        stored = _Object(
            body, request.headers.get("Content-Type", "binary/octet-stream"), self.now()
        )
        objects[obj] = stored
        return web.Response(status=200, headers={"ETag": f'"{stored.etag}"'})

    def _delete_object(
        self, request: web.Request, body: bytes, bucket: str, obj: str
    ) -> web.Response:
        """cmd/object-handlers.go DeleteObjectHandler: s3:DeleteObject; a missing key is 204,
        a missing bucket NoSuchBucket."""
        self._authorize(request, body, "s3:DeleteObject", bucket, obj)
        self._objects_of(bucket).pop(obj, None)
        return web.Response(status=204)

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


def _encode_path(path: str) -> str:
    """minio-go s3utils.EncodePath of the decoded path: all but unreserved characters and
    '/' percent-encoded (UTF-8, upper-case hex)."""
    return quote(path, safe="-_.~/")


def _form(body: bytes) -> dict[str, str]:
    """r.Form.Get: the first value of each form field."""
    form: dict[str, str] = {}
    for k, v in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        form.setdefault(k, v)
    return form


def _session_token(request: web.Request) -> str:
    """cmd/auth-handler.go getSessionToken: the header, else the query parameter."""
    token = request.headers.get("x-amz-security-token", "")
    return token or str(request.rel_url.query.get("X-Amz-Security-Token", ""))


def _go_parse_int(s: str) -> int:
    """strconv.ParseInt(s, 10, 64)."""
    if not s or not all(c.isascii() and c.isdigit() for c in s.lstrip("+-")) or s in "+-":
        raise ValueError(s)
    value = int(s)
    if not -(2**63) <= value < 2**63:
        raise ValueError(s)
    return value


def _canonical_header(name: str) -> str:
    """textproto.CanonicalMIMEHeaderKey."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _s3_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


async def _encrypted(answer: dict[str, Any], secret: str, *, fips: bool) -> web.Response:
    seal = _encrypt_fips if fips else encrypt
    data = await asyncio.to_thread(seal, json.dumps(answer).encode(), secret)
    return web.Response(body=data, content_type="application/octet-stream")


def _encrypt_fips(payload: bytes, password: str) -> bytes:
    """madmin-go EncryptData on a FIPS build (encrypt.go): salt(32) | 0x02 | nonce(8) | the
    sio AES-256-GCM stream, keyed by PBKDF2-SHA256 (8192 rounds) instead of Argon2id. The
    stream itself is what minio/crypto.py writes for 0x00 (same cipher), so its helpers serve."""
    salt, nonce = os.urandom(32), os.urandom(8)
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 8192, dklen=32)
    additional = minio_crypto._generate_additional_data(0, key, nonce + b"\x00" * 4)
    out = salt + b"\x02" + nonce
    starts = range(0, len(payload), 16 * 1024)
    for count, start in enumerate(starts, 1):
        if start == starts[-1]:
            additional = minio_crypto._mark_as_last(additional)
        cipher = AES.new(key, AES.MODE_GCM, minio_crypto._update_nonce_id(nonce, count))
        cipher.update(additional)
        sealed, tag = cipher.encrypt_and_digest(payload[start : start + 16 * 1024])
        out += sealed + tag
    return out


def _admin_error(status: int, code: str, message: str, resource: str) -> web.Response:
    body = {
        "Code": code,
        "Message": message,
        "Resource": resource,
        "RequestId": uuid.uuid4().hex[:16].upper(),
        "HostId": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
    }
    return web.json_response(body, status=status)


def _s3_error(request: web.Request, denied: _Denied) -> web.Response:
    """cmd/api-response.go writeErrorResponse: APIErrorResponse XML; HEAD gets headers only
    (writeErrorResponseHeadersOnly)."""
    if request.method == "HEAD":
        return web.Response(status=denied.status)
    bucket, _, obj = request.path[1:].partition("/")
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{denied.code}</Code><Message>{escape(denied.message)}</Message>"
        f"<Key>{escape(obj)}</Key><BucketName>{escape(bucket)}</BucketName>"
        f"<Resource>{escape(request.path)}</Resource>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId>"
        "<HostId>dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8</HostId>"
        "</Error>"
    )
    return web.Response(status=denied.status, text=xml, content_type="application/xml")


def _sts_error(status: int, code: str, message: str) -> web.Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<Error><Type></Type><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
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
