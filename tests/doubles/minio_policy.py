"""MinIO's IAM policy language, ported to Python from minio/pkg v3.1.3 (the version minio/minio's
go.mod pins): parsing and validation as `policy.ParseConfig` does it, evaluation as
`Policy.IsAllowed` does it, and the bytes of Go's `json.Marshal` of a parsed policy (what
MinIO's STS measures against its 2048 limit).

Public API (everything else is internal):

    parse_policy(text: str) -> ParsedPolicy
        policy.ParseConfig (policy/policy.go): decode, drop duplicate statements, validate.
        Raises PolicyError(message) with MinIO's message, e.g.
        "invalid condition key 's3:x-amz-acl'" or
        "unsupported condition keys '[s3:prefix]' used for action 's3:ListBucketMultipartUploads'".

    go_marshal(parsed: ParsedPolicy) -> bytes
        Go's json.Marshal(parsed) (struct tags and MarshalJSON methods of policy.Policy,
        Statement, ActionSet, ResourceSet, condition.Functions, ValueSet): UTF-8, `<` `>` `&`
        as \\u003c \\u003e \\u0026, U+2028/U+2029 escaped. Raises PolicyError where Go's Marshal
        fails (a statement with NotAction and no Action: "empty actions not allowed").
        Go writes sets in map order, which is random; this writes them sorted. The length, the
        only thing MinIO uses the bytes for, is the same either way.

    is_allowed(policies, action, bucket, key="", conditions=None) -> bool
        Policy.IsAllowed of MergePolicies(*policies) (policy/policy.go): a Deny that applies
        wins, else any Allow that applies, else False (also for no policies). `conditions`
        maps condition key names to request values as MinIO's getConditionValues builds them
        (cmd/bucket-policy.go): names without the "s3:"/"aws:" prefix ("prefix", "delimiter",
        "max-keys", "username", ...); a name given with its prefix ("s3:prefix") is accepted
        and stripped the way condition.KeyName.Name() strips it.

Messages follow Go's fmt strings. Where the text comes from Go's runtime rather than MinIO
(encoding/json syntax errors, time.Parse, base64), it is approximated and says so below.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "DEFAULT_VERSION",
    "ParsedPolicy",
    "PolicyError",
    "Statement",
    "go_marshal",
    "is_allowed",
    "parse_policy",
]

DEFAULT_VERSION = "2012-10-17"  # policy/policy.go DefaultVersion


class PolicyError(ValueError):
    """A policy MinIO refuses, with MinIO's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- actions: policy/action.go, admin-action.go, sts-action.go, kms-action.go ---------------

# action.go supportedActions
S3_ACTIONS: frozenset[str] = frozenset(
    {
        "s3:AbortMultipartUpload",
        "s3:CreateBucket",
        "s3:DeleteBucket",
        "s3:ForceDeleteBucket",
        "s3:DeleteBucketPolicy",
        "s3:DeleteBucketCors",
        "s3:DeleteObject",
        "s3:GetBucketLocation",
        "s3:GetBucketNotification",
        "s3:GetBucketPolicy",
        "s3:GetBucketCors",
        "s3:GetObject",
        "s3:HeadBucket",
        "s3:ListAllMyBuckets",
        "s3:ListBucket",
        "s3:GetBucketPolicyStatus",
        "s3:ListBucketVersions",
        "s3:ListBucketMultipartUploads",
        "s3:ListenNotification",
        "s3:ListenBucketNotification",
        "s3:ListMultipartUploadParts",
        "s3:PutLifecycleConfiguration",
        "s3:GetLifecycleConfiguration",
        "s3:PutBucketNotification",
        "s3:PutBucketPolicy",
        "s3:PutBucketCors",
        "s3:PutObject",
        "s3:BypassGovernanceRetention",
        "s3:PutObjectRetention",
        "s3:GetObjectRetention",
        "s3:GetObjectLegalHold",
        "s3:PutObjectLegalHold",
        "s3:GetBucketObjectLockConfiguration",
        "s3:PutBucketObjectLockConfiguration",
        "s3:GetBucketTagging",
        "s3:PutBucketTagging",
        "s3:GetObjectVersion",
        "s3:GetObjectAttributes",
        "s3:GetObjectVersionAttributes",
        "s3:GetObjectVersionTagging",
        "s3:DeleteObjectVersion",
        "s3:DeleteObjectVersionTagging",
        "s3:PutObjectVersionTagging",
        "s3:GetObjectTagging",
        "s3:PutObjectTagging",
        "s3:DeleteObjectTagging",
        "s3:PutEncryptionConfiguration",
        "s3:GetEncryptionConfiguration",
        "s3:PutBucketVersioning",
        "s3:GetBucketVersioning",
        "s3:GetReplicationConfiguration",
        "s3:PutReplicationConfiguration",
        "s3:ReplicateObject",
        "s3:ReplicateDelete",
        "s3:ReplicateTags",
        "s3:GetObjectVersionForReplication",
        "s3:RestoreObject",
        "s3:ResetBucketReplicationState",
        "s3:PutObjectFanOut",
        "s3:*",
    }
)

# admin-action.go supportedAdminActions (exact names: AdminAction.IsValid is a map lookup)
ADMIN_ACTIONS: frozenset[str] = frozenset(
    "admin:" + name
    for name in [
        "Heal",
        "StorageInfo",
        "DataUsageInfo",
        "TopLocksInfo",
        "Profiling",
        "Prometheus",
        "ServerTrace",
        "ConsoleLog",
        "KMSCreateKey",
        "KMSKeyStatus",
        "ServerInfo",
        "OBDInfo",
        "BandwidthMonitor",
        "ServerUpdate",
        "ServiceRestart",
        "ServiceStop",
        "ServiceFreeze",
        "ConfigUpdate",
        "CreateUser",
        "DeleteUser",
        "ListUsers",
        "EnableUser",
        "DisableUser",
        "GetUser",
        "AddUserToGroup",
        "RemoveUserFromGroup",
        "GetGroup",
        "ListGroups",
        "EnableGroup",
        "DisableGroup",
        "CreateServiceAccount",
        "UpdateServiceAccount",
        "RemoveServiceAccount",
        "ListServiceAccounts",
        "ListTemporaryAccounts",
        "CreatePolicy",
        "DeletePolicy",
        "GetPolicy",
        "AttachUserOrGroupPolicy",
        "UpdatePolicyAssociation",
        "ListUserPolicies",
        "SetBucketQuota",
        "GetBucketQuota",
        "SetBucketTarget",
        "GetBucketTarget",
        "ReplicationDiff",
        "SetTier",
        "ListTier",
        "Decommission",
        "Rebalance",
        "SiteReplicationAdd",
        "SiteReplicationDisable",
        "SiteReplicationInfo",
        "SiteReplicationOperation",
        "SiteReplicationRemove",
        "SiteReplicationResync",
        "ImportBucketMetadata",
        "ExportBucketMetadata",
        "ExportIAM",
        "ImportIAM",
        "ListBatchJobs",
        "DescribeBatchJob",
        "StartBatchJob",
        "CancelBatchJob",
        "*",
    ]
)

# sts-action.go supportedSTSActions: note that a bare "*" is an STS action, so a statement
# with Action "*" is validated (and evaluated, without resource match) as an STS statement.
STS_ACTIONS: frozenset[str] = frozenset({"sts:AssumeRoleWithWebIdentity", "*"})

# kms-action.go supportedKMSActions
KMS_ACTIONS: frozenset[str] = frozenset(
    "kms:" + name
    for name in [
        "CreateKey",
        "DeleteKey",
        "ListKeys",
        "ImportKey",
        "DescribePolicy",
        "AssignPolicy",
        "DeletePolicy",
        "SetPolicy",
        "GetPolicy",
        "ListPolicies",
        "DescribeIdentity",
        "DescribeSelfIdentity",
        "DeleteIdentity",
        "ListIdentities",
        "KeyStatus",
        "Status",
        "API",
        "Metrics",
        "Version",
        "AuditLog",
        "ErrorLog",
        "*",
    ]
)

# --- condition keys: policy/condition/keyname.go --------------------------------------------

_JWT_KEYS = tuple(
    "jwt:" + n
    for n in [
        "sub",
        "iss",
        "aud",
        "jti",
        "name",
        "upn",
        "groups",
        "given_name",
        "family_name",
        "middle_name",
        "nickname",
        "preferred_username",
        "profile",
        "picture",
        "website",
        "email",
        "gender",
        "birthdate",
        "phone_number",
        "address",
        "scope",
        "client_id",
    ]
)
# keyname.go AllSupportedKeys
ALL_SUPPORTED_KEYS: tuple[str, ...] = (
    "s3:signatureversion",
    "s3:authType",
    "s3:signatureAge",
    "s3:x-amz-copy-source",
    "s3:x-amz-server-side-encryption",
    "s3:x-amz-server-side-encryption-customer-algorithm",
    "s3:x-amz-metadata-directive",
    "s3:x-amz-storage-class",
    "s3:x-amz-server-side-encryption-aws-kms-key-id",
    "s3:x-amz-content-sha256",
    "s3:LocationConstraint",
    "s3:prefix",
    "s3:delimiter",
    "s3:max-keys",
    "s3:versionid",
    "s3:object-lock-remaining-retention-days",
    "s3:object-lock-mode",
    "s3:object-lock-legal-hold",
    "s3:object-lock-retain-until-date",
    "aws:Referer",
    "aws:SourceIp",
    "aws:UserAgent",
    "aws:SecureTransport",
    "aws:CurrentTime",
    "aws:EpochTime",
    "aws:principaltype",
    "aws:userid",
    "aws:username",
    "aws:groups",
    "ldap:user",
    "ldap:username",
    "ldap:groups",
    "s3:RequestObjectTag",
    "s3:ExistingObjectTag",
    "s3:RequestObjectTagKeys",
    *_JWT_KEYS,
    "sts:DurationSeconds",
    "svc:DurationSeconds",
)
# keyname.go CommonKeys (the keys every S3 action accepts)
COMMON_KEYS: tuple[str, ...] = (
    "s3:signatureversion",
    "s3:authType",
    "s3:signatureAge",
    "s3:x-amz-content-sha256",
    "s3:LocationConstraint",
    "aws:Referer",
    "aws:SourceIp",
    "aws:UserAgent",
    "aws:SecureTransport",
    "aws:CurrentTime",
    "aws:EpochTime",
    "aws:principaltype",
    "aws:userid",
    "aws:username",
    "aws:groups",
    "ldap:user",
    "ldap:username",
    "ldap:groups",
    *_JWT_KEYS,
)
# keyname.go AllSupportedAdminKeys / AllSupportedSTSKeys
ADMIN_KEYS: frozenset[str] = frozenset(
    {
        "aws:Referer",
        "aws:SourceIp",
        "aws:UserAgent",
        "aws:SecureTransport",
        "aws:CurrentTime",
        "aws:EpochTime",
        "aws:principaltype",
        "aws:userid",
        "aws:username",
        "aws:groups",
        "ldap:user",
        "ldap:username",
        "ldap:groups",
        "svc:DurationSeconds",
        *_JWT_KEYS,
    }
)
STS_KEYS: frozenset[str] = frozenset({"sts:DurationSeconds"})

_SSE = (
    "s3:x-amz-server-side-encryption",
    "s3:x-amz-server-side-encryption-customer-algorithm",
    "s3:x-amz-server-side-encryption-aws-kms-key-id",
)
_VID = "s3:versionid"
_TAG = "s3:ExistingObjectTag"
_REQ_TAGS = ("s3:RequestObjectTagKeys", "s3:RequestObjectTag")
_LOCK = ("s3:object-lock-retain-until-date", "s3:object-lock-mode")
# action.go createActionConditionKeyMap: the keys each action accepts besides CommonKeys.
# Actions absent here accept CommonKeys only (ActionConditionKeyMap.Lookup).
ACTION_CONDITION_KEYS: dict[str, frozenset[str]] = {
    a: frozenset(ks)
    for a, ks in {
        "s3:*": ALL_SUPPORTED_KEYS,
        "s3:DeleteObject": (_VID,),
        "s3:GetObject": (*_SSE, _VID, _TAG),
        "s3:GetObjectAttributes": (_TAG,),
        "s3:GetObjectVersionAttributes": (_VID, _TAG),
        "s3:ListBucket": ("s3:prefix", "s3:delimiter", "s3:max-keys"),
        "s3:ListBucketVersions": ("s3:prefix", "s3:delimiter", "s3:max-keys"),
        "s3:PutObject": (
            "s3:x-amz-copy-source",
            *_SSE,
            "s3:x-amz-metadata-directive",
            "s3:x-amz-storage-class",
            _VID,
            *_LOCK,
            "s3:object-lock-legal-hold",
            *_REQ_TAGS,
        ),
        "s3:PutObjectRetention": (*_SSE, "s3:object-lock-remaining-retention-days", *_LOCK, _VID),
        "s3:GetObjectRetention": (*_SSE, _VID),
        "s3:PutObjectLegalHold": (*_SSE, "s3:object-lock-legal-hold", _VID),
        "s3:BypassGovernanceRetention": (
            _VID,
            "s3:object-lock-remaining-retention-days",
            *_LOCK,
            "s3:object-lock-legal-hold",
            *_REQ_TAGS,
        ),
        "s3:PutBucketTagging": _REQ_TAGS,
        "s3:PutObjectTagging": (_VID, _TAG, *_REQ_TAGS),
        "s3:GetObjectTagging": (_VID, _TAG),
        "s3:DeleteObjectTagging": (_VID, _TAG),
        "s3:PutObjectVersionTagging": (_VID, _TAG, *_REQ_TAGS),
        "s3:GetObjectVersion": (_VID, _TAG),
        "s3:GetObjectVersionTagging": (_VID, _TAG),
        "s3:DeleteObjectVersion": (_VID,),
        "s3:DeleteObjectVersionTagging": (_VID, _TAG),
        "s3:ReplicateObject": (_VID, _TAG),
        "s3:ReplicateDelete": (_VID, _TAG),
        "s3:ReplicateTags": (_VID, _TAG),
        "s3:GetObjectVersionForReplication": (_VID, _TAG),
    }.items()
}
# The remaining entries of createActionConditionKeyMap map to CommonKeys alone; they matter
# for Lookup only through wildcard actions, which already get CommonKeys.

# keyname.go: prefixes KeyName.Name() strips
_TRIMMED_PREFIXES = frozenset({"aws", "jwt", "ldap", "sts", "svc", "s3"})


def key_name(key: str) -> str:
    """condition.KeyName.Name(): "s3:prefix" -> "prefix", "aws:username" -> "username"."""
    prefix, sep, rest = key.partition(":")
    if not sep or prefix not in _TRIMMED_PREFIXES:
        return key
    return rest


# --- wildcard: minio/pkg wildcard/match.go ---------------------------------------------------


def wildcard_match(pattern: str, name: str) -> bool:
    """wildcard.Match: '*' any run of bytes, '?' exactly one byte (deepMatchRune works on
    bytes, not runes, whatever its name says)."""
    if pattern == "":
        return name == ""
    if pattern == "*":
        return True
    return _deep_match(name.encode(), pattern.encode())


def _deep_match(s: bytes, p: bytes) -> bool:
    # Iterative form of deepMatchRune(simple=false): same language, no exponential recursion.
    si = pi = 0
    star_p, star_s = -1, 0
    while si < len(s):
        if pi < len(p) and (p[pi] == ord("?") or (p[pi] != ord("*") and p[pi] == s[si])):
            si, pi = si + 1, pi + 1
        elif pi < len(p) and p[pi] == ord("*"):
            star_p, star_s = pi, si
            pi += 1
        elif star_p >= 0:
            star_s += 1
            si, pi = star_s, star_p + 1
        else:
            return False
    while pi < len(p) and p[pi] == ord("*"):
        pi += 1
    return pi == len(p)


def _go_path_clean(path: str) -> str:
    """Go's path.Clean."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    joined = "/".join(out)
    if rooted:
        return "/" + joined
    return joined or "."


# --- resources: policy/resource.go, resourceset.go -------------------------------------------

_ARN_S3 = "arn:aws:s3:::"
_ARN_KMS = "arn:minio:kms:::"
_TYPE_PREFIX = {"s3": _ARN_S3, "kms": _ARN_KMS, "all": "*"}


@dataclass(frozen=True, order=True)
class Resource:
    type: str  # "s3", "kms" or "all" (ResourceARNS3 / ResourceARNKMS / ResourceARNAll)
    pattern: str

    def __str__(self) -> str:
        # Resource.String(): type prefix + pattern, so "*" (type all, pattern "*") is "**".
        return _TYPE_PREFIX[self.type] + self.pattern

    def is_s3(self) -> bool:
        return self.type in ("s3", "all")

    def is_kms(self) -> bool:
        return self.type in ("kms", "all")

    def is_bucket_pattern(self) -> bool:
        return "/" not in self.pattern or self.pattern == "*"

    def is_object_pattern(self) -> bool:
        return "/" in self.pattern or "*" in self.pattern

    def is_valid(self) -> bool:
        if self.is_s3() and self.pattern.startswith("/"):
            return False
        if self.is_kms() and any(c in self.pattern for c in "/\\."):
            return False
        return self.pattern != ""

    def match(self, resource: str, values: Mapping[str, Sequence[str]]) -> bool:
        """Resource.Match: policy variables of CommonKeys substituted, then path.Clean equality
        or wildcard match."""
        pattern = self.pattern
        if "$" in pattern:
            pattern = _substitute_resource(pattern, values)
        clean = _go_path_clean(resource)
        if clean != "." and clean == pattern:
            return True
        return wildcard_match(pattern, resource)


_COMMON_KEYS_SET = frozenset(COMMON_KEYS)


def _substitute_resource(pattern: str, values: Mapping[str, Sequence[str]]) -> str:
    out: list[str] = []
    idx = pattern.index("$")
    out.append(pattern[:idx])
    remain = pattern[idx:]
    while remain:
        if remain[0] != "$" or len(remain) < 3:
            out.append(remain[0])
            remain = remain[1:]
            continue
        end = remain.find("}")
        if remain[1] != "{" or end < 0:
            out.append("$")
            remain = remain[1:]
            continue
        ckey = remain[2:end]
        got = values.get(key_name(ckey))
        if ckey in _COMMON_KEYS_SET and got and got[0] != "":
            out.append(got[0])
        else:
            out.append("${" + ckey + "}")
        remain = remain[end + 1 :]
    return "".join(out)


def _parse_resource(s: str) -> Resource:
    """resource.go parseResource (the map of prefixes cannot match ambiguously)."""
    if s == "*":
        res = Resource("all", "*")
    elif s.startswith(_ARN_S3):
        res = Resource("s3", s[len(_ARN_S3) :])
    elif s.startswith(_ARN_KMS):
        res = Resource("kms", s[len(_ARN_KMS) :])
    elif s.startswith("*"):
        res = Resource("all", s[1:])
    else:
        raise PolicyError(f"invalid resource '{s}'")
    if res.pattern.startswith("/"):
        raise PolicyError(f"invalid resource '{s}' - starts with '/' will not match a bucket")
    return res


def _set_str(items: Iterable[str]) -> str:
    """fmt %v of a sorted []string: "[a b]"."""
    return "[" + " ".join(sorted(items)) + "]"


# --- condition functions: policy/condition/*.go ---------------------------------------------

_FUNC_NAMES = frozenset(
    {
        "StringEquals",
        "StringNotEquals",
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        "BinaryEquals",
        "StringLike",
        "StringNotLike",
        "IpAddress",
        "NotIpAddress",
        "Null",
        "Bool",
        "NumericEquals",
        "NumericNotEquals",
        "NumericLessThan",
        "NumericLessThanEquals",
        "NumericGreaterThan",
        "NumericGreaterThanIfExists",
        "NumericGreaterThanEquals",
        "DateEquals",
        "DateNotEquals",
        "DateLessThan",
        "DateLessThanEquals",
        "DateGreaterThan",
        "DateGreaterThanEquals",
    }
)
_QUALIFIERS = frozenset({"ForAllValues", "ForAnyValue"})
_SUPPORTED_KEYS = frozenset(ALL_SUPPORTED_KEYS)


@dataclass(frozen=True, order=True)
class Key:
    """condition.Key: a key name and an optional "/variable" (s3:ExistingObjectTag/owner)."""

    name: str
    variable: str = ""

    def __str__(self) -> str:
        return f"{self.name}/{self.variable}" if self.variable else self.name

    def lookup_name(self) -> str:
        base = key_name(self.name)
        return f"{base}/{self.variable}" if self.variable else base


def _parse_key(s: str) -> Key:
    """key.go parseKey."""
    name, _, variable = s.partition("/")
    if name not in _SUPPORTED_KEYS:
        raise PolicyError(f"invalid condition key '{s}'")
    return Key(name, variable)


def _parse_name(s: str) -> tuple[str, str]:
    """name.go parseName: (qualifier, name)."""
    tokens = s.split(":")
    if len(tokens) == 1:
        qualifier, fname = "", s
    elif len(tokens) == 2:
        qualifier, fname = tokens
    else:
        raise PolicyError(f"invalid condition name '{s}'")
    if (qualifier and qualifier not in _QUALIFIERS) or fname not in _FUNC_NAMES:
        raise PolicyError(f"invalid condition name '{s}'")
    return qualifier, fname


# A condition.Value: str, int or bool (value.go); kept as Python values, typed by isinstance.
Value = str | int | bool


def _value_str(v: Value) -> str:
    """Value.String()."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")


def _values_of(values: Mapping[str, Sequence[str]], key: Key) -> list[str]:
    """value.go getValuesByKey: the canonical-header form of the name first, then the name."""
    name = key.lookup_name()
    canonical = name
    if _TOKEN.fullmatch(name):  # textproto.CanonicalMIMEHeaderKey leaves non-tokens alone
        canonical = "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))
    if canonical in values:
        return list(values[canonical])
    return list(values.get(name, ()))


def _substitute(values: Mapping[str, Sequence[str]]) -> Callable[[str], str]:
    """stringfunc.go substitute: ${aws:username} etc. replaced by the request's values."""

    def apply(v: str) -> str:
        for k in COMMON_KEYS:
            got = values.get(key_name(k))
            if got and got[0] != "":
                v = v.replace("${" + k + "}", got[0])
        return v

    return apply


@dataclass(frozen=True)
class Condition:
    """One condition function of a statement (condition.Function)."""

    qualifier: str
    name: str  # StringEquals, StringLike, ...
    key: Key
    # Canonical values: strings (string funcs; BinaryEquals decoded), ints (numeric), one bool
    # (Null), one "true"/"false" string (Bool), datetimes (Date*), networks (IP).
    values: tuple[Any, ...]

    @property
    def full_name(self) -> str:
        return f"{self.qualifier}:{self.name}" if self.qualifier else self.name

    def canonical(self) -> str:
        """Function.String(), which Functions.Equals compares."""
        return f"{self.full_name}:{self.key}:{sorted(map(str, self.values))}"

    def marshal_values(self) -> list[Value]:
        """Function.toMap(): the ValueSet Go marshals for this function."""
        if self.name == "BinaryEquals":
            return sorted(base64.b64encode(v.encode()).decode() for v in self.values)
        if self.name.startswith("Date"):
            return [_format_rfc3339(v) for v in self.values]
        if self.name in ("IpAddress", "NotIpAddress"):
            return sorted(str(n) for n in self.values)
        if self.name == "Null" or self.name.startswith("Numeric"):
            return list(self.values)
        return sorted(self.values)

    def evaluate(self, values: Mapping[str, Sequence[str]]) -> bool:
        rvalues = _values_of(values, self.key)
        n = self.name
        if n in ("StringLike", "StringNotLike"):  # stringLikeFunc.eval
            fvalues = {_substitute(values)(v) for v in self.values}
            result = self.qualifier == "ForAllValues"
            for rv in rvalues:
                matched = any(wildcard_match(fv, rv) for fv in fvalues)
                if self.qualifier == "ForAllValues":
                    if not matched:
                        result = False
                        break
                elif matched:
                    result = True
                    break
            return not result if n == "StringNotLike" else result
        if n.startswith("String") or n == "BinaryEquals":  # stringFunc.eval
            rset = set(rvalues)
            fset = {_substitute(values)(v) for v in self.values}
            if "IgnoreCase" in n:
                rset, fset = {v.lower() for v in rset}, {v.lower() for v in fset}
            inter = rset & fset
            result = not rset or rset == inter if self.qualifier == "ForAllValues" else bool(inter)
            return not result if "Not" in n else result
        if n == "Null":
            return (len(rvalues) == 0) if self.values[0] else (len(rvalues) != 0)
        if n == "Bool":
            return bool(rvalues) and self.values[0] == rvalues[0]
        if n.startswith("Numeric"):
            if not rvalues:
                return n == "NumericGreaterThanIfExists"
            try:
                number = _go_atoi(rvalues[0])
            except ValueError:
                return False
            return _compare(n[len("Numeric") :].replace("IfExists", ""), number, self.values[0])
        if n.startswith("Date"):
            if not rvalues:
                return False
            try:
                t = _parse_rfc3339(rvalues[0])
            except ValueError:
                return False
            return _compare(n[len("Date") :], t, self.values[0])
        # IpAddress / NotIpAddress (ipaddrfunc.go)
        ips = []
        for s in rvalues:
            try:
                ips.append(ipaddress.ip_address(s))
            except ValueError:
                return n == "NotIpAddress"
        result = any(ip in net for ip in ips for net in self.values if ip.version == net.version)
        return not result if n == "NotIpAddress" else result


def _compare(op: str, left: Any, right: Any) -> bool:
    """numericfunc.go / datefunc.go evaluate: the request's value against the policy's."""
    if op == "Equals":
        return bool(left == right)
    if op == "NotEquals":
        return bool(left != right)
    if op == "GreaterThan":
        return bool(left > right)
    if op == "GreaterThanEquals":
        return bool(left >= right)
    if op == "LessThan":
        return bool(left < right)
    return bool(left <= right)


_INT64 = (-(2**63), 2**63 - 1)


def _go_atoi(s: str) -> int:
    """strconv.Atoi: optional sign, ASCII digits, int64 range."""
    if not re.fullmatch(r"[+-]?[0-9]+", s):
        raise ValueError(f"strconv.Atoi: parsing {_go_quote(s)}: invalid syntax")
    v = int(s)
    if not _INT64[0] <= v <= _INT64[1]:
        raise ValueError(f"strconv.Atoi: parsing {_go_quote(s)}: value out of range")
    return v


_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def _parse_rfc3339(s: str) -> datetime:
    """time.Parse(time.RFC3339, s) for well-formed input. Go's error texts are approximated."""
    m = _RFC3339.fullmatch(s)
    if not m:
        raise ValueError(
            f'parsing time {_go_quote(s)} as "2006-01-02T15:04:05Z07:00": cannot parse '
            f'{_go_quote(s)} as "2006"'
        )
    text = s.replace("Z", "+00:00")
    frac = m.group(7)
    if frac and len(frac) > 7:  # Python takes at most microseconds
        text = text.replace(frac, frac[:7])
    return datetime.fromisoformat(text)


def _format_rfc3339(t: datetime) -> str:
    """t.Format(time.RFC3339): whole seconds, "Z" for a zero offset."""
    offset = t.utcoffset()
    base = t.replace(microsecond=0, tzinfo=None).isoformat()
    if not offset:
        return base + "Z"
    total = int(offset.total_seconds())
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return f"{base}{sign}{total // 3600:02d}:{total % 3600 // 60:02d}"


def _go_quote(s: str) -> str:
    """strconv.Quote, near enough for messages."""
    return json.dumps(s, ensure_ascii=False)


_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_:]{1,61}[A-Za-z0-9]")
_IP_LIKE = re.compile(r"(\d+\.){3}\d+")


def _check_valid_bucket_name(bucket: str) -> None:
    """minio-go pkg/s3utils CheckValidBucketName (checkBucketNameCommon, strict=false)."""
    if bucket.strip() == "":
        raise PolicyError("Bucket name cannot be empty")
    if len(bucket.encode()) < 3:
        raise PolicyError("Bucket name cannot be shorter than 3 characters")
    if len(bucket.encode()) > 63:
        raise PolicyError("Bucket name cannot be longer than 63 characters")
    if _IP_LIKE.fullmatch(bucket):
        raise PolicyError("Bucket name cannot be an ip address")
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        raise PolicyError("Bucket name contains invalid characters")
    if not _BUCKET_NAME.fullmatch(bucket):
        raise PolicyError("Bucket name contains invalid characters")


def _string_values(fname: str, values: list[Value]) -> list[str]:
    """stringfunc.go valuesToStringSlice."""
    out = []
    for v in values:
        if not isinstance(v, str):
            raise PolicyError(f"value must be a string for {fname} condition")
        out.append(v)
    return out


def _validate_string_values(fname: str, key: Key, values: Iterable[str]) -> None:
    """stringfunc.go validateStringValues."""
    for s in values:
        if key.name == "s3:x-amz-copy-source":
            bucket, _, obj = s.removeprefix("/").partition("/")
            if obj == "":
                raise PolicyError(
                    f"invalid value '{s}' for 's3:x-amz-copy-source' for {fname} condition"
                )
            _check_valid_bucket_name(bucket)
        if fname in ("StringLike", "StringNotLike"):
            continue
        bad = (
            (key.name == "s3:x-amz-server-side-encryption-customer-algorithm" and s != "AES256")
            or (key.name == "s3:x-amz-server-side-encryption" and s not in ("AES256", "aws:kms"))
            or (key.name == "s3:x-amz-metadata-directive" and s not in ("COPY", "REPLACE"))
        )
        if bad:
            raise PolicyError(f"invalid value '{s}' for '{key.name}' for {fname} condition")
        if key.name == "s3:x-amz-content-sha256" and s == "":
            raise PolicyError(
                f"invalid empty value for 's3:x-amz-content-sha256' for {fname} condition"
            )


_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def _new_condition(qualifier: str, fname: str, key: Key, values: list[Value]) -> Condition:
    """func.go conditionFuncMap: each constructor's checks, in its order."""
    if fname in (
        "StringEquals",
        "StringNotEquals",
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        "StringLike",
        "StringNotLike",
    ):
        strings = _string_values(fname, values)
        _validate_string_values(fname, key, strings)
        return Condition(qualifier, fname, key, tuple(sorted(set(strings))))
    if fname == "BinaryEquals":
        decoded = []
        for s in _string_values(fname, values):
            try:
                decoded.append(base64.b64decode(s, validate=True).decode("utf-8", "replace"))
            except (binascii.Error, ValueError):
                # Go: base64.CorruptInputError; the byte offset is not ported.
                raise PolicyError("illegal base64 data at input byte 0") from None
        _validate_string_values(fname, key, decoded)
        return Condition(qualifier, fname, key, tuple(sorted(set(decoded))))
    if fname in ("IpAddress", "NotIpAddress"):
        nets = []
        for v in values:
            if not isinstance(v, str):
                raise PolicyError(
                    f"value {_value_str(v)} must be string representation of CIDR for {fname} "
                    "condition"
                )
            s = v if "/" in v else v + "/32"
            try:
                nets.append(ipaddress.ip_network(s, strict=False))
            except ValueError:
                raise PolicyError(f"value {s} must be CIDR string for {fname} condition") from None
        if key.name != "aws:SourceIp":
            raise PolicyError(f"only aws:SourceIp key is allowed for {fname} condition")
        return Condition(qualifier, fname, key, tuple(nets))
    if fname == "Null":
        if len(values) != 1:
            raise PolicyError("only one value is allowed for Null condition")
        v = values[0]
        if isinstance(v, bool):
            flag = v
        elif isinstance(v, str):
            if v not in _GO_BOOLS:
                raise PolicyError("value must be a boolean string for Null condition")
            flag = _GO_BOOLS[v]
        else:
            raise PolicyError("value must be a boolean for Null condition")
        return Condition(qualifier, fname, key, (flag,))
    if fname == "Bool":
        if key.name != "aws:SecureTransport":
            raise PolicyError("only aws:SecureTransport key is allowed for Bool condition")
        if len(values) != 1:
            raise PolicyError("only one value is allowed for boolean condition")
        v = values[0]
        if isinstance(v, str) and v not in _GO_BOOLS:
            raise PolicyError("value must be a boolean string for boolean condition")
        if not isinstance(v, (str, bool)):
            raise PolicyError("value must be a boolean for boolean condition")
        return Condition(qualifier, fname, key, (_value_str(v),))
    if fname.startswith("Numeric"):
        if len(values) != 1:
            raise PolicyError(f"only one value is allowed for {fname} condition")
        v = values[0]
        if isinstance(v, bool):
            raise PolicyError(f"value {_value_str(v)} must be a int for {fname} condition")
        if isinstance(v, str):
            try:
                number = _go_atoi(v)
            except ValueError as exc:
                raise PolicyError(f"value {v} must be a int for {fname} condition: {exc}") from None
        else:
            number = v
        return Condition(qualifier, fname, key, (number,))
    # Date* (datefunc.go valueToTime)
    if len(values) != 1:
        raise PolicyError(f"only one value is allowed for {fname} condition")
    v = values[0]
    if not isinstance(v, str):
        raise PolicyError(f"value {_value_str(v)} must be a time.Time for {fname} condition")
    try:
        when = _parse_rfc3339(v)
    except ValueError as exc:
        raise PolicyError(
            f"value {v} must be a time.Time string for {fname} condition: {exc}"
        ) from None
    return Condition(qualifier, fname, key, (when,))


# --- statements and policies: policy/statement.go, policy.go --------------------------------


@dataclass(frozen=True)
class Statement:
    sid: str = ""
    effect: str = ""
    actions: frozenset[str] = frozenset()
    not_actions: frozenset[str] = frozenset()
    resources: frozenset[Resource] = frozenset()
    not_resources: frozenset[Resource] = frozenset()
    conditions: tuple[Condition, ...] = ()

    def equals(self, other: Statement) -> bool:
        """Statement.Equals (the Sid is not compared)."""
        return (
            self.effect == other.effect
            and self.actions == other.actions
            and self.not_actions == other.not_actions
            and self.resources == other.resources
            and self.not_resources == other.not_resources
            and sorted(c.canonical() for c in self.conditions)
            == sorted(c.canonical() for c in other.conditions)
        )

    def is_admin(self) -> bool:
        return any(a in ADMIN_ACTIONS for a in self.actions)

    def is_sts(self) -> bool:
        return any(a in STS_ACTIONS for a in self.actions)

    def is_kms(self) -> bool:
        return any(a in KMS_ACTIONS for a in self.actions)

    def condition_keys(self) -> set[Key]:
        return {c.key for c in self.conditions}

    def validate(self) -> None:
        """statement.go isValid, check for check. Where Go iterates a map (so which of several
        bad actions or keys it names varies), this takes them sorted."""
        if self.effect not in ("Allow", "Deny"):
            raise PolicyError(f"invalid Effect {self.effect}")
        if not self.actions and not self.not_actions:
            raise PolicyError("Action must not be empty")
        if self.actions and self.not_actions:
            raise PolicyError("Action and NotAction cannot be specified in the same statement")
        keys = self.condition_keys()
        if self.is_admin():
            for action in sorted(self.actions):
                if action not in ADMIN_ACTIONS:
                    raise PolicyError(f"unsupported admin action '{action}'")
            self._check_keys(keys, lambda _a: ADMIN_KEYS)
            return
        if self.is_sts():
            for action in sorted(self.actions):
                if action not in STS_ACTIONS:
                    raise PolicyError(f"unsupported STS action '{action}'")
            self._check_keys(keys, lambda _a: STS_KEYS)
            return
        if self.is_kms():
            for action in sorted(self.actions):
                if action not in KMS_ACTIONS:
                    raise PolicyError(f"unsupported KMS action '{action}'")
            for res in sorted(self.resources) + sorted(self.not_resources):
                if not res.is_kms():
                    raise PolicyError(f"resource '{res}' type is not KMS")
                if not res.is_valid():
                    raise PolicyError("invalid resource")
            return
        if not self.resources and not self.not_resources:
            raise PolicyError("Resource must not be empty")
        if self.resources and self.not_resources:
            raise PolicyError("Resource and NotResource cannot be specified in the same statement")
        for res in sorted(self.resources) + sorted(self.not_resources):  # ValidateS3
            if not res.is_s3():
                raise PolicyError(f"resource '{res}' type is not S3")
            if not res.is_valid():
                raise PolicyError("invalid resource")
        for action in sorted(self.actions):  # ActionSet.Validate
            if not any(wildcard_match(action, supported) for supported in S3_ACTIONS):
                raise PolicyError(f"unsupported action '{action}'")
        for action in sorted(self.actions):
            # Every pattern is a bucket or an object pattern (resource.go), so these two
            # checks of statement.go cannot fire; kept for fidelity.
            for label, rs in (("Resource", self.resources), ("NotResource", self.not_resources)):
                if rs and not any(r.is_object_pattern() or r.is_bucket_pattern() for r in rs):
                    names = _set_str(map(str, rs))
                    raise PolicyError(f"unsupported {label} found {names} for action {action}")
            self._check_keys(keys, _lookup_action_keys, only=action)

    def _check_keys(
        self, keys: set[Key], allowed: Callable[[str], frozenset[str]], only: str | None = None
    ) -> None:
        for action in [only] if only is not None else sorted(self.actions):
            ok = allowed(action)
            # KeySet.Difference / Match: a key with a variable matches its bare name too.
            diff = {k for k in keys if str(k) not in ok and k.name not in ok}
            if diff:
                raise PolicyError(
                    f"unsupported condition keys '{_set_str(map(str, diff))}' used for action "
                    f"'{action}'"
                )

    def applies(self, action: str, bucket: str, obj: str, values: Mapping[str, Any]) -> bool:
        """Statement.IsAllowed's check(): does this statement match the request?"""
        if (not _actions_match(self.actions, action) and self.actions) or _actions_match(
            self.not_actions, action
        ):
            return False
        resource = bucket + ("" if obj.startswith("/") else "/") + obj if obj else bucket + "/"
        if self.is_kms() and (resource == "/" or not self.resources):
            return all(c.evaluate(values) for c in self.conditions)
        ignore_resources = self.is_admin() or self.is_sts()
        if (
            not ignore_resources
            and self.resources
            and not any(r.match(resource, values) for r in self.resources)
        ):
            return False
        if (
            not ignore_resources
            and self.not_resources
            and any(r.match(resource, values) for r in self.not_resources)
        ):
            return False
        return all(c.evaluate(values) for c in self.conditions)


def _lookup_action_keys(action: str) -> frozenset[str]:
    """ActionConditionKeyMap.Lookup: CommonKeys plus the keys of every action the (possibly
    wildcard) action matches."""
    merged = set(COMMON_KEYS)
    for act, ks in ACTION_CONDITION_KEYS.items():
        if wildcard_match(action, act):
            merged |= ks
    return frozenset(merged)


def _actions_match(actions: frozenset[str], action: str) -> bool:
    """ActionSet.Match, with its special case: s3:GetObjectVersion grants s3:GetObject."""
    for pattern in actions:
        if wildcard_match(pattern, action):
            return True
        if pattern == "s3:GetObjectVersion" and action == "s3:GetObject":
            return True
    return False


@dataclass(frozen=True)
class ParsedPolicy:
    id: str = ""
    version: str = ""
    statements: tuple[Statement, ...] | None = None  # None: "Statement" absent or null
    source: str = field(default="", compare=False)

    def is_allowed(
        self, action: str, bucket: str, obj: str = "", values: Mapping[str, Any] | None = None
    ) -> bool:
        """Policy.IsAllowed (no owner, no DenyOnly)."""
        values = values or {}
        statements = self.statements or ()
        for st in statements:
            if st.effect == "Deny" and st.applies(action, bucket, obj, values):
                return False
        return any(
            st.effect == "Allow" and st.applies(action, bucket, obj, values) for st in statements
        )


# --- Go's encoding/json, as far as these types see it ----------------------------------------


def _go_type(v: Any) -> str:
    """The JSON kind encoding/json names in an UnmarshalTypeError."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _go_float(x: float) -> str:
    """fmt %v of a float64 (strconv 'g', shortest, exponent when < -4 or >= 21)."""
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    r = repr(abs(x))  # shortest round-trip digits, as strconv's shortest mode
    mantissa_text, _, exp_text = r.partition("e")
    int_part, _, frac = mantissa_text.partition(".")
    digits = (int_part + frac).lstrip("0")
    # dp: where the decimal point sits relative to the digit string
    dp = len(int_part.lstrip("0")) if int_part.strip("0") else -(len(frac) - len(frac.lstrip("0")))
    dp += int(exp_text) if exp_text else 0
    ds = digits.rstrip("0") or "0"
    exp = dp - 1
    if exp < -4 or exp >= 21:
        mantissa = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{ds}"
    if dp >= len(ds):
        return f"{sign}{ds}{'0' * (dp - len(ds))}"
    return f"{sign}{ds[:dp]}.{ds[dp:]}"


def _go_sprint(v: Any) -> str:
    """fmt %v of what encoding/json puts in an interface{} (set.StringSet.UnmarshalJSON)."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _go_float(float(v))
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return "[" + " ".join(_go_sprint(x) for x in v) + "]"
    pairs = sorted(v)  # a Go map prints sorted by key
    return "map[" + " ".join(f"{k}:{_go_sprint(x)}" for k, x in pairs) + "]"


def _string_set(v: Any) -> set[str]:
    """minio-go set.StringSet.UnmarshalJSON: an array's elements, or the one value, each
    formatted with %v (null gives the empty set)."""
    if v is None:
        return set()
    if isinstance(v, list):
        return {_go_sprint(x) for x in v}
    return {_go_sprint(v)}


def _is_go_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and _INT64[0] <= v <= _INT64[1]


def _value_set(v: Any) -> list[Value]:
    """condition.ValueSet.UnmarshalJSON (valueset.go) with Value.UnmarshalJSON (value.go):
    bool, then int, then string; null is bool false; an array of at least one, no duplicates."""

    def one(x: Any) -> Value:
        if x is None or isinstance(x, bool):
            return bool(x)
        if _is_go_int(x):
            return int(x)
        if isinstance(x, str):
            return x
        raise _Unknown(x)

    if not isinstance(v, list):
        try:
            return [one(v)]
        except _Unknown:
            raise PolicyError(
                f"json: cannot unmarshal {_go_type(v)} into Go value of type []condition.Value"
            ) from None
    if not v:
        raise PolicyError("invalid value")
    out: list[Value] = []
    seen: set[tuple[type, Value]] = set()
    for x in v:
        try:
            value = one(x)
        except _Unknown as exc:
            raise PolicyError(f"unknown json data '{_go_bytes(exc.raw)}'") from None
        marker = (type(value), value)
        if marker in seen:
            raise PolicyError(f"duplicate value found '{_value_str(value)}'")
        seen.add(marker)
        out.append(value)
    return out


class _Unknown(Exception):
    def __init__(self, raw: Any) -> None:
        super().__init__(raw)
        self.raw = raw


def _go_bytes(raw: Any) -> str:
    """fmt %v of the []byte Value.UnmarshalJSON was given: "[49 46 53]"."""
    text = json.dumps(raw, separators=(",", ":"), ensure_ascii=False)
    return "[" + " ".join(str(b) for b in text.encode()) + "]"


def _functions(v: Any) -> tuple[Condition, ...]:
    """condition.Functions.UnmarshalJSON (func.go)."""
    if v is None:
        raise PolicyError("condition must not be empty")
    if not isinstance(v, dict):
        raise PolicyError(
            f"json: cannot unmarshal {_go_type(v)} into Go value of type "
            "map[string]map[string]condition.ValueSet"
        )
    parsed: dict[str, dict[str, list[Value]]] = {}
    soft: str | None = None
    for fname, args in v.items():
        if args is None:
            parsed[fname] = {}
        elif not isinstance(args, dict):
            soft = soft or (
                f"json: cannot unmarshal {_go_type(args)} into Go value of type "
                "map[string]condition.ValueSet"
            )
            parsed[fname] = {}
        else:
            parsed[fname] = {k: _value_set(x) for k, x in args.items()}
    if soft:
        raise PolicyError(soft)
    if not parsed:
        raise PolicyError("condition must not be empty")
    funcs: list[Condition] = []
    for fname, args in parsed.items():
        qualifier, name = _parse_name(fname)
        for key_string, values in args.items():
            funcs.append(_new_condition(qualifier, name, _parse_key(key_string), values))
    return tuple(funcs)


def _resource_set(v: Any) -> frozenset[Resource]:
    """ResourceSet.UnmarshalJSON (resourceset.go): strings in sorted order (StringSet.ToSlice),
    each parsed; two strings parsing to one resource ("*" and "**") is a duplicate."""
    out: set[Resource] = set()
    for s in sorted(_string_set(v)):
        res = _parse_resource(s)
        if res in out:
            raise PolicyError(f"duplicate resource '{s}' found")
        out.add(res)
    return frozenset(out)


def _action_set(v: Any) -> frozenset[str]:
    """ActionSet.UnmarshalJSON (actionset.go)."""
    actions = _string_set(v)
    if not actions:
        raise PolicyError("empty actions not allowed")
    return frozenset(actions)


def _field(pairs: list[tuple[str, Any]], names: Sequence[str]) -> list[tuple[str, Any]]:
    """encoding/json matches object keys to struct fields case-insensitively (exact match
    preferred, both land in the same field); unknown keys are ignored here because
    policy.Policy.UnmarshalJSON decodes with a plain json.Unmarshal, so ParseConfig's
    DisallowUnknownFields never reaches the fields."""
    by_fold = {n.lower(): n for n in names}
    return [(by_fold[k.lower()], x) for k, x in pairs if k.lower() in by_fold]


def _decode_statement(v: Any, soft: list[str]) -> Statement:
    if v is None:
        return Statement()
    if not isinstance(v, _Obj):
        soft.append(
            f"json: cannot unmarshal {_go_type(_plain(v))} into Go struct field "
            "subPolicy.Statement of type policy.Statement"
        )
        return Statement()
    values: dict[str, Any] = {}
    for name, x in _field(
        v.pairs,
        ("Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"),
    ):
        plain = _plain(x)
        if name in ("Sid", "Effect"):
            if plain is None:
                continue
            if not isinstance(plain, str):
                gotype = "policy.ID" if name == "Sid" else "policy.Effect"
                soft.append(
                    f"json: cannot unmarshal {_go_type(plain)} into Go struct field "
                    f"Statement.Statement.{name} of type {gotype}"
                )
                continue
            values[name] = plain
        elif name in ("Action", "NotAction"):
            values[name] = _action_set(plain)
        elif name in ("Resource", "NotResource"):
            values[name] = _resource_set(plain)
        else:
            values[name] = _functions(plain)
    return Statement(
        sid=values.get("Sid", ""),
        effect=values.get("Effect", ""),
        actions=values.get("Action", frozenset()),
        not_actions=values.get("NotAction", frozenset()),
        resources=values.get("Resource", frozenset()),
        not_resources=values.get("NotResource", frozenset()),
        conditions=values.get("Condition", ()),
    )


class _Obj:
    """A JSON object as its ordered (key, value) pairs."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


def _plain(v: Any) -> Any:
    """A JSON value from ordered pairs back to plain dict/list (last duplicate key wins, as in
    encoding/json)."""
    if isinstance(v, _Obj):
        return {k: _plain(x) for k, x in v.pairs}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def _decode_json(text: str) -> Any:
    """json.Decoder.Decode of the first value (trailing data is not looked at). Syntax error
    texts of Go's scanner are approximated."""
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        raise PolicyError("EOF")
    decoder = json.JSONDecoder(object_pairs_hook=_Obj, parse_constant=_reject_constant)
    try:
        value, _ = decoder.raw_decode(stripped)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(stripped):
            raise PolicyError("unexpected EOF") from None
        char = stripped[exc.pos]
        raise PolicyError(
            f"invalid character {json.dumps(char)[1:-1]!r} looking for beginning of value"
        ) from None
    except ValueError as exc:
        raise PolicyError(str(exc)) from None
    return value


def parse_policy(text: str) -> ParsedPolicy:
    """policy.ParseConfig: decode (policy.Policy.UnmarshalJSON, which also drops duplicate
    statements), then Validate. Raises PolicyError with MinIO's message."""
    raw = _decode_json(text)
    soft: list[str] = []
    if raw is None:  # null: Policy.UnmarshalJSON leaves the zero policy
        parsed = ParsedPolicy(source=text)
    elif not isinstance(raw, _Obj):
        raise PolicyError(
            f"json: cannot unmarshal {_go_type(_plain(raw))} into Go value of type policy.subPolicy"
        )
    else:
        pid, version = "", ""
        statements: tuple[Statement, ...] | None = None
        for name, x in _field(raw.pairs, ("ID", "Version", "Statement")):
            plain = _plain(x)
            if name in ("ID", "Version"):
                if plain is None:
                    continue
                if not isinstance(plain, str):
                    gotype = "policy.ID" if name == "ID" else "string"
                    soft.append(
                        f"json: cannot unmarshal {_go_type(plain)} into Go struct field "
                        f"subPolicy.{name} of type {gotype}"
                    )
                    continue
                if name == "ID":
                    pid = plain
                else:
                    version = plain
            elif x is None:
                statements = None
            elif not isinstance(x, list):
                soft.append(
                    f"json: cannot unmarshal {_go_type(plain)} into Go struct field "
                    "subPolicy.Statement of type []policy.Statement"
                )
            else:
                statements = tuple(_decode_statement(el, soft) for el in x)
        if soft:  # the first type error, returned once decoding finished without a hard one
            raise PolicyError(soft[0])
        if statements is not None:
            statements = _drop_duplicates(statements)
        parsed = ParsedPolicy(pid, version, statements, source=text)
    if parsed.version not in (DEFAULT_VERSION, ""):
        raise PolicyError(f"invalid version '{parsed.version}'")
    for st in parsed.statements or ():
        st.validate()
    return parsed


def _drop_duplicates(statements: tuple[Statement, ...]) -> tuple[Statement, ...]:
    """Policy.dropDuplicateStatements: later statements Equal to an earlier one go."""
    kept: list[Statement] = []
    for st in statements:
        if not any(k.equals(st) for k in kept):
            kept.append(st)
    return tuple(kept)


# --- Go's json.Marshal of a parsed policy ----------------------------------------------------

_GO_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b"}
_GO_SHORT["\f"] = "\\f"  # Go >= 1.22 writes \b and \f short; MinIO builds with Go 1.24


def go_json_string(s: str) -> str:
    """encoding/json's string encoding with HTML escaping (json.Marshal's default)."""
    out = ['"']
    for ch in s:
        if ch in _GO_SHORT:
            out.append(_GO_SHORT[ch])
        elif ch < " " or ch in "<>&\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        elif "\ud800" <= ch <= "\udfff":
            out.append("\ufffd")  # Go's decoder already made lone surrogates U+FFFD
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_value(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return go_json_string(v)


def _go_list(items: Iterable[str]) -> str:
    return "[" + ",".join(items) + "]"


def _marshal_statement(st: Statement) -> str:
    parts: list[str] = []
    if st.sid:
        parts.append('"Sid":' + go_json_string(st.sid))
    parts.append('"Effect":' + go_json_string(st.effect))
    if not st.actions:  # Action has no omitempty; ActionSet.MarshalJSON refuses an empty set
        raise PolicyError(
            "json: error calling MarshalJSON for type policy.ActionSet: empty actions not allowed"
        )
    parts.append('"Action":' + _go_list(go_json_string(a) for a in sorted(st.actions)))
    if st.not_actions:
        parts.append('"NotAction":' + _go_list(go_json_string(a) for a in sorted(st.not_actions)))
    for label, rs in (("Resource", st.resources), ("NotResource", st.not_resources)):
        if rs:
            for r in rs:
                if not r.is_valid():
                    raise PolicyError(
                        "json: error calling MarshalJSON for type policy.ResourceSet: "
                        f"invalid resource {r}"
                    )
            parts.append(f'"{label}":' + _go_list(go_json_string(str(r)) for r in sorted(rs)))
    if st.conditions:
        by_name: dict[str, dict[str, list[Value]]] = {}
        for c in st.conditions:
            by_name.setdefault(c.full_name, {})[str(c.key)] = c.marshal_values()
        inner = []
        for fname in sorted(by_name):
            keys = by_name[fname]
            body = ",".join(
                go_json_string(k) + ":" + _go_list(_go_value(v) for v in keys[k])
                for k in sorted(keys)
            )
            inner.append(go_json_string(fname) + ":{" + body + "}")
        parts.append('"Condition":{' + ",".join(inner) + "}")
    return "{" + ",".join(parts) + "}"


def go_marshal(parsed: ParsedPolicy) -> bytes:
    """json.Marshal(policy.Policy) as cmd/sts-handlers.go populateSessionPolicy calls it."""
    parts: list[str] = []
    if parsed.id:
        parts.append('"ID":' + go_json_string(parsed.id))
    parts.append('"Version":' + go_json_string(parsed.version))
    if parsed.statements is None:
        parts.append('"Statement":null')
    else:
        parts.append('"Statement":' + _go_list(_marshal_statement(s) for s in parsed.statements))
    return ("{" + ",".join(parts) + "}").encode("utf-8")


# --- evaluation ------------------------------------------------------------------------------


def merge_policies(policies: Iterable[ParsedPolicy]) -> ParsedPolicy:
    """policy.MergePolicies: all statements, duplicates dropped."""
    version = ""
    statements: list[Statement] = []
    for p in policies:
        version = version or p.version
        statements.extend(p.statements or ())
    return ParsedPolicy(version=version, statements=_drop_duplicates(tuple(statements)))


def is_allowed(
    policies: Sequence[ParsedPolicy],
    action: str,
    bucket: str,
    key: str = "",
    conditions: Mapping[str, Sequence[str]] | None = None,
) -> bool:
    """MinIO's verdict for `action` on bucket/key under the merged `policies` (see the module
    docstring for `conditions`)."""
    values: dict[str, list[str]] = {}
    for k, vs in (conditions or {}).items():
        values.setdefault(key_name(k), []).extend(vs)
    return merge_policies(policies).is_allowed(action, bucket, key, values)
