"""policy.py at its edges: the messages and codes a caller gets, the exact size limits, Go's
escaping as MinIO counts it, and check-config's worst case matched by real requests."""

from __future__ import annotations

import json

import pytest

from credbroker.domain import Access, Flavor, Scope
from credbroker.errors import InvalidRequest
from credbroker.policy import (
    MAX_KEY_CHARS,
    MAX_POLICY_CHARS,
    MAX_PREFIX_CHARS,
    encoded_size,
    narrow_prefix,
    normalize_prefix,
    policy_size,
    render_policy,
    session_policy,
    validate_bucket,
    validate_object_key,
    validate_space_key,
    worst_case_policy_chars,
)


def refusal(call: object, *args: object, **kwargs: object) -> tuple[str, str]:
    assert callable(call)
    with pytest.raises(InvalidRequest) as refused:
        call(*args, **kwargs)
    return refused.value.code, refused.value.message


# --- what a refused caller reads --------------------------------------------------------------


def test_a_bad_space_key_says_what_a_space_key_is() -> None:
    assert refusal(validate_space_key, "EN G") == (
        "invalid_space",
        "space must be a Confluence space key: letters and digits, optionally starting with ~",
    )


def test_a_bad_bucket_is_named_in_the_refusal() -> None:
    assert refusal(validate_bucket, "Bad_Bucket") == (
        "invalid_bucket",
        "not a valid bucket name: 'Bad_Bucket'",
    )


def test_a_prefix_that_is_not_a_string_is_refused_as_such() -> None:
    assert refusal(normalize_prefix, 7) == ("invalid_prefix", "prefix must be a string")


def test_an_over_long_prefix_names_the_limit() -> None:
    assert refusal(normalize_prefix, "x" * (MAX_PREFIX_CHARS + 1)) == (
        "invalid_prefix",
        f"prefix is longer than {MAX_PREFIX_CHARS} characters",
    )
    assert normalize_prefix("x" * MAX_PREFIX_CHARS) == "x" * MAX_PREFIX_CHARS + "/"


@pytest.mark.parametrize("space_prefix", ["a//b", "../x", "a b", "x" * 401])
def test_a_bad_space_prefix_is_the_configurations_fault_not_the_callers(
    space_prefix: str,
) -> None:
    code, message = refusal(narrow_prefix, space_prefix, "ok")
    assert code == "invalid_space_prefix" and message.startswith("space_prefix ")
    code, _ = refusal(worst_case_policy_chars, "cb-main", space_prefix, Flavor.RGW)
    assert code == "invalid_space_prefix"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "key must name an object, not a folder"),
        ("dir/", "key must name an object, not a folder"),
        ("a*b", "key may not contain control characters, wildcards, quotes or backslashes"),
        ("a\u200bb", "key may not contain control characters, wildcards, quotes or backslashes"),
        (" a", "key may not start or end with white space"),
        ("a ", "key may not start or end with white space"),
        ("a/../b", "key may not contain empty, '.' or '..' segments, nor start with '/'"),
        ("k" * (MAX_KEY_CHARS + 1), f"key is longer than {MAX_KEY_CHARS} characters"),
    ],
)
def test_a_bad_object_key_says_why(key: str, message: str) -> None:
    assert refusal(validate_object_key, key) == ("invalid_key", message)


def test_a_presign_key_too_long_as_the_policy_spells_it_says_so() -> None:
    key = "\u00e9" * 120  # 120 characters; 720 as RGW's JSON spells it
    scope = Scope("cb-main", "", Access.READ)
    assert refusal(session_policy, scope, flavor=Flavor.RGW, object_key=key) == (
        "invalid_key",
        "object key is 720 characters as the session policy spells it; the limit "
        f"(with the space prefix) is {MAX_KEY_CHARS}",
    )
    session_policy(scope, flavor=Flavor.MINIO, object_key=key)  # 240 bytes for MinIO


# --- the policy document ----------------------------------------------------------------------


@pytest.mark.parametrize("flavor", list(Flavor))
@pytest.mark.parametrize("object_key", [None, "a.txt"])
def test_every_policy_is_a_2012_10_17_document(flavor: Flavor, object_key: str | None) -> None:
    policy = session_policy(
        Scope("cb-main", "ENG/", Access.WRITE), flavor=flavor, object_key=object_key
    )
    assert list(policy) == ["Version", "Statement"]
    assert policy["Version"] == "2012-10-17"


def test_a_policy_of_exactly_the_limit_is_rendered_and_one_more_is_refused() -> None:
    padding = MAX_POLICY_CHARS - len('{"a":""}')
    exact: dict[str, object] = {"a": "x" * padding}
    assert len(render_policy(exact, flavor=Flavor.RGW)) == MAX_POLICY_CHARS

    over: dict[str, object] = {"a": "x" * (padding + 1)}
    assert refusal(render_policy, over, flavor=Flavor.MINIO) == (
        "policy_too_large",
        f"session policy would be {MAX_POLICY_CHARS + 1} characters as minio counts them; "
        f"the limit is {MAX_POLICY_CHARS}",
    )


def test_rendering_is_compact_ascii_json() -> None:
    assert render_policy({"k": ["\u00e9", 1]}, flavor=Flavor.MINIO) == '{"k":["\\u00e9",1]}'


# --- sizes as each server counts them ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "minio", "rgw"),
    [
        ("abc", 3, 3),
        ("X<Y", 3 + 5, 3),  # Go escapes <, > and & as \u003c: six bytes
        ("<>&", 18, 3),
        ("\u00e9", 2, 6),  # UTF-8 bytes for MinIO, \u00e9 for RGW
        ("X\u2028", 1 + 6, 1 + 6),  # Go escapes U+2028 and U+2029 as \u2028
        ("\u2029\u2029", 12, 12),
        ('a"b', 4, 4),  # both escape quotes alike
    ],
)
def test_encoded_sizes(value: str, minio: int, rgw: int) -> None:
    assert encoded_size(value, Flavor.MINIO) == minio
    assert encoded_size(value, Flavor.RGW) == rgw


def test_a_policys_size_counts_like_its_values() -> None:
    policy: dict[str, object] = {"k": "<\u00e9\u2028"}
    assert policy_size(policy, Flavor.RGW) == len(json.dumps(policy, separators=(",", ":")))
    # {"k":"..."}: 8 bytes around 6 (<) + 2 (e-acute) + 6 (U+2028)
    assert policy_size(policy, Flavor.MINIO) == 8 + 6 + 2 + 6


# --- check-config's worst case ----------------------------------------------------------------


@pytest.mark.parametrize("flavor", list(Flavor))
@pytest.mark.parametrize("space_prefix", ["", "ENG", "a/b/c/", "p" * 397 + "/"])
def test_the_worst_case_is_the_largest_policy_a_real_request_can_produce(
    flavor: Flavor, space_prefix: str
) -> None:
    """A write key with the longest prefix a request may add, or a presigned PUT of the longest
    key: whichever is larger (MinIO: the write key; RGW: the PUT, with its Deny)."""
    base = normalize_prefix(space_prefix)
    longest_request = "x" * (MAX_PREFIX_CHARS - len(base) - 1)
    write_scope = Scope("cb-main", narrow_prefix(space_prefix, longest_request), Access.WRITE)
    write = policy_size(session_policy(write_scope, flavor=flavor), flavor)
    put = policy_size(
        session_policy(
            Scope("cb-main", base, Access.WRITE),
            flavor=flavor,
            object_key="k" * (MAX_KEY_CHARS - len(base)),
        ),
        flavor,
    )

    assert worst_case_policy_chars("cb-main", space_prefix, flavor) == max(write, put)
    assert len(write_scope.prefix) == MAX_PREFIX_CHARS
    longer = Scope("cb-main", narrow_prefix(space_prefix, longest_request + "x"), Access.WRITE)
    with pytest.raises(InvalidRequest):  # one more character: no policy, no key
        session_policy(longer, flavor=flavor)


def test_which_request_is_the_worst_differs_per_flavor() -> None:
    base = "ENG/"
    for flavor, put_is_larger in ((Flavor.RGW, True), (Flavor.MINIO, False)):
        write = session_policy(
            Scope("cb-main", base + "x" * 395 + "/", Access.WRITE), flavor=flavor
        )
        put = session_policy(
            Scope("cb-main", base, Access.WRITE), flavor=flavor, object_key="k" * 696
        )
        assert (policy_size(put, flavor) > policy_size(write, flavor)) is put_is_larger


@pytest.mark.parametrize(("length", "fits"), [(397, True), (398, False), (399, False)])
def test_a_space_prefix_must_leave_room_for_a_requested_prefix(length: int, fits: bool) -> None:
    """A request adds at least one character and a slash: room of 2 or more."""
    space_prefix = "p" * length + "/"  # room: 400 - (length + 1)
    if fits:
        assert worst_case_policy_chars("cb-main", space_prefix, Flavor.RGW) > 0
        return
    assert refusal(worst_case_policy_chars, "cb-main", space_prefix, Flavor.RGW) == (
        "invalid_space_prefix",
        f"space prefix leaves no room under the {MAX_PREFIX_CHARS}-character prefix limit",
    )
