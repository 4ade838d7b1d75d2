"""Validate every input that reaches a policy, and build session policies from a Scope as data.

The rule is refuse, never clean: anything that could widen a policy (wildcards, policy
variables, `..`, empty segments, quotes, control characters, over-long values) raises
InvalidRequest. The builder itself only ever sees validated values.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from credbroker.domain import Access, Flavor, Scope
from credbroker.errors import InvalidRequest

# MinIO's AssumeRole accepts a session policy of up to 2048 bytes as it re-serialises it
# (cmd/sts-handlers.go, maxSTSSessionPolicySize); RGW the same number of characters as sent.
MAX_POLICY_CHARS: Final = 2048
# A write policy names its prefix up to three times and a presign-PUT policy its key up to twice:
# these caps keep the worst case under MAX_POLICY_CHARS (check-config proves it per space and
# flavor; a key is measured as the policy spells it, see encoded_size). They also keep
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
# s3:PutObjectAcl. On RGW a Deny stops canned public ACLs; grant headers need the bucket's
# IgnorePublicAcls (vendor/rgw). MinIO ignores object ACLs altogether (see session_policy).
_PUBLIC_CANNED_ACLS: Final = ("public-read", "public-read-write", "authenticated-read")


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


def is_printable_text(text: str) -> bool:
    """The one check that text shown to people (object keys, the audit trail's free text)
    reads as it is: str.isprintable() refuses C0 and C1 controls, bidi overrides, zero-width
    characters, line and paragraph separators, lone surrogates and unassigned code points
    (Unicode categories C* and Z* but the ASCII space)."""
    return text.isprintable()


def validate_object_key(key: str) -> str:
    """Validate the object-key part (relative to the scope prefix) of a presign request."""
    if not isinstance(key, str) or not key or key.endswith("/"):
        raise InvalidRequest("key must name an object, not a folder", code="invalid_key")
    # Also refuses C1 controls, bidi overrides, zero-width and line separators, which would
    # make keys in URLs and audit records read differently than they are.
    if _KEY_FORBIDDEN.search(key) or not is_printable_text(key):
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


def encoded_size(value: str, flavor: Flavor) -> int:
    """How much of the policy limit `value` takes once it sits inside a JSON string.

    RGW counts the characters we send (JSON with non-ASCII as \\uXXXX). MinIO parses the
    policy and counts the bytes of Go's json.Marshal of it (cmd/sts-handlers.go,
    populateSessionPolicy): UTF-8, and `<`, `>`, `&` escaped as six-byte \\u003c etc.
    """
    if flavor is Flavor.MINIO:
        return _go_json_size(json.dumps(value, ensure_ascii=False)) - 2
    return len(json.dumps(value, ensure_ascii=True)) - 2


def _go_json_size(text: str) -> int:
    """Bytes of Go's encoding of what Python's json.dumps(..., ensure_ascii=False) gave.

    Both escape quotes, backslashes and control characters alike (validation refuses those in
    anything a client sends); Go also escapes <, > and & (HTML safety), and U+2028/U+2029.
    """
    extra = sum(text.count(c) for c in "<>&") * 5 + sum(text.count(c) for c in "\u2028\u2029") * 3
    return len(text.encode("utf-8")) + extra


def session_policy(
    scope: Scope, *, flavor: Flavor, object_key: str | None = None
) -> dict[str, Any]:
    """The inline session policy for `scope`, as data, in `flavor`'s policy language.

    With `object_key`, the policy covers that one object only (for presigned URLs) and grants
    no listing at all. The same scope gives the same grant on either server; what differs is
    only what each server's parser accepts:

    - RGW: a write key also gets a Deny of public canned ACLs on PutObject (RGW 16 applies an
      `x-amz-acl` without asking for s3:PutObjectAcl), and s3:ListBucketMultipartUploads under
      the same s3:prefix condition as listing (RGW then denies it: nothing is listed).
    - MinIO refuses the whole AssumeRole on a condition key it does not know or an action does
      not accept (minio/pkg policy/statement.go). `s3:x-amz-acl` is not one of its keys, and
      MinIO ignores object ACLs anyway (PutObject never reads the header; PutObjectAcl answers
      NotImplemented for anything but private: cmd/acl-handlers.go). s3:ListBucketMultipartUploads
      accepts no s3:prefix (policy/action.go), and without it would list the uploads of the
      whole bucket: it is granted only when the scope is the whole bucket.
    """
    validate_bucket(scope.bucket)
    prefix = normalize_prefix(scope.prefix)
    write = scope.access is Access.WRITE
    object_actions = _WRITE_OBJECT_ACTIONS if write else _READ_OBJECT_ACTIONS
    statements: list[dict[str, Any]] = []
    if object_key is None:
        objects = _object_arn(scope.bucket, prefix)
    else:
        key = validate_object_key(object_key)
        size = encoded_size(prefix + key, flavor)
        if size > MAX_KEY_CHARS:
            raise InvalidRequest(
                f"object key is {size} characters as the session policy spells it; the limit "
                f"(with the space prefix) is {MAX_KEY_CHARS}",
                code="invalid_key",
            )
        objects = _object_arn(scope.bucket, prefix, key)
    statements.append({"Effect": "Allow", "Action": list(object_actions), "Resource": [objects]})
    if write and flavor is Flavor.RGW:
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
    bucket_actions = ["s3:ListBucket"]
    if write and (flavor is Flavor.RGW or not prefix):
        bucket_actions.append("s3:ListBucketMultipartUploads")
    bucket_statement: dict[str, Any] = {
        "Effect": "Allow",
        "Action": bucket_actions,
        "Resource": [f"arn:aws:s3:::{scope.bucket}"],
    }
    if prefix:
        # Listing is confined to the prefix; a listing without a prefix is denied.
        bucket_statement["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
    statements.append(bucket_statement)
    return {"Version": "2012-10-17", "Statement": statements}


def policy_size(policy: dict[str, Any], flavor: Flavor, *, text: str | None = None) -> int:
    """The policy's size as `flavor` counts it against MAX_POLICY_CHARS (see encoded_size).
    `text`: the policy already rendered by _compact, to save a second serialisation."""
    text = _compact(policy) if text is None else text
    if flavor is Flavor.RGW:
        return len(text)
    if "\\u" not in text:
        # Nothing was escaped to ASCII: Go writes the same bytes, but for < > & (six each).
        return len(text) + 5 * sum(text.count(c) for c in "<>&")
    return _go_json_size(json.dumps(policy, separators=(",", ":"), ensure_ascii=False))


def render_policy(policy: dict[str, Any], *, flavor: Flavor) -> str:
    """Compact ASCII JSON: RGW fails on spaces encoded as '+'; both servers cap the size."""
    text = _compact(policy)
    size = policy_size(policy, flavor, text=text)
    if size > MAX_POLICY_CHARS:
        raise InvalidRequest(
            f"session policy would be {size} characters as {flavor.value} counts them; the "
            f"limit is {MAX_POLICY_CHARS}",
            code="policy_too_large",
        )
    return text


def _compact(policy: dict[str, Any]) -> str:
    return json.dumps(policy, separators=(",", ":"), ensure_ascii=True)


def worst_case_policy_chars(bucket: str, space_prefix: str, flavor: Flavor) -> int:
    """Size of the largest policy any request for this space could produce (check-config):
    a write key with the longest prefix a request may add, or a presigned PUT for the longest
    key. Prefix segments are ASCII without & (their size is their length); a key's size is
    capped as the policy spells it (session_policy), so a key of plain letters is the worst."""
    base = normalize_prefix(space_prefix, what="space_prefix")
    room = MAX_PREFIX_CHARS - len(base)
    if room < 2:  # (the key cap, 700, always leaves room after a prefix of at most 400)
        raise InvalidRequest(
            f"space prefix leaves no room under the {MAX_PREFIX_CHARS}-character prefix limit",
            code="invalid_space_prefix",
        )
    longest = base + "x" * (room - 1) + "/"
    write = session_policy(Scope(bucket=bucket, prefix=longest, access=Access.WRITE), flavor=flavor)
    put = session_policy(
        Scope(bucket=bucket, prefix=base, access=Access.WRITE),
        flavor=flavor,
        object_key="k" * (MAX_KEY_CHARS - len(base)),
    )
    return max(policy_size(write, flavor), policy_size(put, flavor))
