"""Validate every input that reaches a policy, and build session policies from a Scope as data.

The rule is refuse, never clean: anything that could widen a policy (wildcards, policy
variables, `..`, empty segments, quotes, control characters, over-long values) raises
InvalidRequest. The builder itself only ever sees validated values.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from credbroker.domain import Access, Scope
from credbroker.errors import InvalidRequest

# MinIO's AssumeRole accepts a session policy of 1 to 2048 characters (docs/sts/assume-role.md).
MAX_POLICY_CHARS: Final = 2048
# A write policy names its prefix three times and a presign-PUT policy its key twice: these caps
# keep the worst case under MAX_POLICY_CHARS (check-config proves it per space). They also keep
# every Resource ARN far below ~1,590 characters, where RGW 16's AssumeRole crashes radosgw.
MAX_PREFIX_CHARS: Final = 400
MAX_KEY_CHARS: Final = 700

# Confluence space keys: letters and digits; personal spaces start with "~".
_SPACE_KEY = re.compile(r"~?[A-Za-z0-9]{1,255}")
# S3 bucket names (the strict, DNS-compatible rules MinIO and RGW share).
_BUCKET = re.compile(r"(?!xn--)(?!.*\.\.)(?!.*-\.)(?!.*\.-)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_LIKE = re.compile(r"\d+\.\d+\.\d+\.\d+")
# A prefix segment ends up inside an ARN: a deliberately small alphabet, no `*?$"'\` or space.
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._=+@,-]+")
# An object key for a presigned URL is never a policy, but still names exactly one object:
# printable characters only, no wildcards or quotes, and no path tricks.
_KEY_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f*?\"'\\$`<>{}|^]")

_READ_OBJECT_ACTIONS: Final = ("s3:GetObject",)
_WRITE_OBJECT_ACTIONS: Final = (
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
)
# A key that may write must not publish: RGW 16 lets PutObject carry an ACL without asking for
# s3:PutObjectAcl. This Deny stops canned public ACLs; grant headers need the bucket's
# IgnorePublicAcls (vendor/rgw). MinIO ignores object ACLs altogether.
_PUBLIC_CANNED_ACLS: Final = ("public-read", "public-read-write", "authenticated-read")
_READ_BUCKET_ACTIONS: Final = ("s3:ListBucket",)
_WRITE_BUCKET_ACTIONS: Final = ("s3:ListBucket", "s3:ListBucketMultipartUploads")


def validate_space_key(space: str) -> str:
    if not isinstance(space, str) or not _SPACE_KEY.fullmatch(space):
        raise InvalidRequest(
            "space must be a Confluence space key: letters and digits, optionally starting with ~",
            code="invalid_space",
        )
    return space


def validate_bucket(bucket: str) -> str:
    if not _BUCKET.fullmatch(bucket) or _IP_LIKE.fullmatch(bucket):
        raise InvalidRequest(f"not a valid bucket name: {bucket!r}", code="invalid_bucket")
    return bucket


def _segments(value: str, what: str, *, max_chars: int) -> list[str]:
    if len(value) > max_chars:
        raise InvalidRequest(
            f"{what} is longer than {max_chars} characters", code=f"invalid_{what}"
        )
    stripped = value[:-1] if value.endswith("/") else value
    if not stripped:
        return []
    segments = stripped.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidRequest(
                f"{what} may not contain empty, '.' or '..' segments, nor start with '/'",
                code=f"invalid_{what}",
            )
    return segments


def normalize_prefix(prefix: str, *, what: str = "prefix") -> str:
    """Validate a prefix and return it in canonical form: "" or "a/b/"."""
    if not isinstance(prefix, str):
        raise InvalidRequest(f"{what} must be a string", code=f"invalid_{what}")
    segments = _segments(prefix, what, max_chars=MAX_PREFIX_CHARS)
    for segment in segments:
        if not _PREFIX_SEGMENT.fullmatch(segment):
            raise InvalidRequest(
                f"{what} segments may only use letters, digits and . _ = + @ , -",
                code=f"invalid_{what}",
            )
    return "".join(f"{s}/" for s in segments)


def narrow_prefix(space_prefix: str, requested: str | None) -> str:
    """The requested prefix, taken inside the space's prefix. It can only narrow."""
    base = normalize_prefix(space_prefix, what="space_prefix")
    if not requested:
        return base
    return base + normalize_prefix(requested)


def validate_object_key(key: str) -> str:
    """Validate the object-key part (relative to the scope prefix) of a presign request."""
    if not isinstance(key, str) or not key or key.endswith("/"):
        raise InvalidRequest("key must name an object, not a folder", code="invalid_key")
    # isprintable(): also refuses C1 controls, bidi overrides, zero-width and line separators,
    # which would make keys in URLs and audit records read differently than they are.
    if _KEY_FORBIDDEN.search(key) or not key.isprintable():
        raise InvalidRequest(
            "key may not contain control characters, wildcards, quotes or backslashes",
            code="invalid_key",
        )
    _segments(key, "key", max_chars=MAX_KEY_CHARS)
    if key != key.strip():
        raise InvalidRequest("key may not start or end with white space", code="invalid_key")
    return key


def _object_arn(bucket: str, prefix: str, key: str | None = None) -> str:
    return f"arn:aws:s3:::{bucket}/{prefix}{key if key is not None else '*'}"


def session_policy(scope: Scope, *, object_key: str | None = None) -> dict[str, Any]:
    """The inline session policy for `scope`, as data.

    With `object_key`, the policy covers that one object only (for presigned URLs) and grants
    no listing at all.
    """
    validate_bucket(scope.bucket)
    prefix = normalize_prefix(scope.prefix)
    write = scope.access is Access.WRITE
    object_actions = _WRITE_OBJECT_ACTIONS if write else _READ_OBJECT_ACTIONS
    statements: list[dict[str, Any]] = []
    objects = (
        _object_arn(scope.bucket, prefix)
        if object_key is None
        else _object_arn(scope.bucket, prefix, validate_object_key(object_key))
    )
    statements.append({"Effect": "Allow", "Action": list(object_actions), "Resource": [objects]})
    if write:
        statements.append(
            {
                "Effect": "Deny",
                "Action": ["s3:PutObject"],
                "Resource": [objects],
                "Condition": {"StringEquals": {"s3:x-amz-acl": list(_PUBLIC_CANNED_ACLS)}},
            }
        )
    if object_key is not None:
        return {"Version": "2012-10-17", "Statement": statements}
    bucket_statement: dict[str, Any] = {
        "Effect": "Allow",
        "Action": list(_WRITE_BUCKET_ACTIONS if write else _READ_BUCKET_ACTIONS),
        "Resource": [f"arn:aws:s3:::{scope.bucket}"],
    }
    if prefix:
        # Listing is confined to the prefix; a listing without a prefix is denied.
        bucket_statement["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
    statements.append(bucket_statement)
    return {"Version": "2012-10-17", "Statement": statements}


def render_policy(policy: dict[str, Any]) -> str:
    """Compact JSON: RGW fails on spaces encoded as '+', and MinIO counts characters."""
    text = json.dumps(policy, separators=(",", ":"), ensure_ascii=True)
    if len(text) > MAX_POLICY_CHARS:
        raise InvalidRequest(
            f"session policy would be {len(text)} characters; the limit is {MAX_POLICY_CHARS}",
            code="policy_too_large",
        )
    return text


def worst_case_policy_chars(bucket: str, space_prefix: str) -> int:
    """Length of the largest policy any request for this space could produce (check-config)."""
    base = normalize_prefix(space_prefix, what="space_prefix")
    room = MAX_PREFIX_CHARS - len(base)
    if room < 2:
        raise InvalidRequest(
            f"space prefix leaves no room under the {MAX_PREFIX_CHARS}-character prefix limit",
            code="invalid_space_prefix",
        )
    longest = base + "x" * (room - 1) + "/"
    policy = session_policy(Scope(bucket=bucket, prefix=longest, access=Access.WRITE))
    return len(json.dumps(policy, separators=(",", ":"), ensure_ascii=True))
