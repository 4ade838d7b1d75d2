"""The one property that matters most: no input can widen a vended key's policy."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credbroker.domain import Access, Flavor, Scope
from credbroker.errors import InvalidRequest
from credbroker.policy import (
    MAX_KEY_CHARS,
    MAX_POLICY_CHARS,
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

HOSTILE_PREFIXES = [
    "*",
    "a*",
    "a/*",
    "?",
    "a?b",
    "..",
    "../",
    "a/../b",
    "./a",
    "a/./b",
    "//",
    "a//b",
    "/a",
    "${aws:username}",
    "a$b",
    'a"b',
    "a'b",
    "a\\b",
    "a\nb",
    "a\x00b",
    "a\tb",
    "a b",
    "a%2a",
    "arn:aws:s3:::other/*",
    "a/b\u202e",
    "é",
    "x" * 401,
]


@pytest.mark.parametrize("prefix", HOSTILE_PREFIXES)
def test_hostile_prefixes_are_refused_not_cleaned(prefix: str) -> None:
    with pytest.raises(InvalidRequest):
        narrow_prefix("ENG/", prefix)


@pytest.mark.parametrize(
    ("space_prefix", "requested", "expected"),
    [
        ("ENG/", None, "ENG/"),
        ("ENG/", "", "ENG/"),
        ("ENG", "reports", "ENG/reports/"),
        ("ENG/", "reports/2026/", "ENG/reports/2026/"),
        ("", "a", "a/"),
        ("confluence/ENG/", "a.b_c-d=e+f@g,h", "confluence/ENG/a.b_c-d=e+f@g,h/"),
    ],
)
def test_requested_prefix_only_narrows(
    space_prefix: str, requested: str | None, expected: str
) -> None:
    assert narrow_prefix(space_prefix, requested) == expected


@pytest.mark.parametrize(
    "space", ["", "ENG*", "ENG/", "E NG", "~", "~a~b", "ENG\n", "ÉNG", "x" * 256, "../ENG"]
)
def test_bad_space_keys_are_refused(space: str) -> None:
    with pytest.raises(InvalidRequest):
        validate_space_key(space)


@pytest.mark.parametrize("space", ["ENG", "ds", "~jdoe", "~5b10a2844c20165700ede21g", "A1"])
def test_confluence_space_keys_pass(space: str) -> None:
    assert validate_space_key(space) == space


@pytest.mark.parametrize(
    "bucket", ["ab", "UPPER", "a_b", "a..b", "-ab", "ab-", "192.168.0.1", "xn--ab", "a" * 64, "a*"]
)
def test_bad_buckets_are_refused(bucket: str) -> None:
    with pytest.raises(InvalidRequest):
        validate_bucket(bucket)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "dir/",
        "../x",
        "a/../../x",
        "/abs",
        "a//b",
        "a*",
        "a?",
        'a"',
        "a'",
        "a\\b",
        "a\x00",
        "a\r\nb",
        "${aws:username}",
        "a\x85b",
        "a\x9bb",
        "a\u2028b",
        "evil\u202efdp.exe",
        "a\u200bb",
        "\ufeffa",
        " lead",
        "trail ",
        "x" * 701,
    ],
)
def test_hostile_object_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidRequest):
        validate_object_key(key)


@pytest.mark.parametrize(
    "key", ["report.pdf", "2026/11/Q3 report (final).pdf", "a+b=c@d,e.txt", "ünïcode.txt"]
)
def test_ordinary_object_keys_pass(key: str) -> None:
    assert validate_object_key(key) == key


def _statements(policy: dict[str, object]) -> list[dict[str, object]]:
    statements = policy["Statement"]
    assert isinstance(statements, list)
    return statements


def _actions(statement: dict[str, object]) -> set[str]:
    actions = statement["Action"]
    assert isinstance(actions, list)
    return set(actions)


@pytest.mark.parametrize("flavor", list(Flavor))
def test_read_policy_grants_get_and_prefixed_list_only(flavor: Flavor) -> None:
    policy = session_policy(Scope("exports", "ENG/", Access.READ), flavor=flavor)
    objects, bucket = _statements(policy)
    assert objects == {
        "Effect": "Allow",
        "Action": ["s3:GetObject"],
        "Resource": ["arn:aws:s3:::exports/ENG/*"],
    }
    assert bucket == {
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": ["arn:aws:s3:::exports"],
        "Condition": {"StringLike": {"s3:prefix": ["ENG/*"]}},
    }


_WRITE_OBJECT_ACTIONS = {
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
}


def test_rgw_write_policy_adds_put_delete_and_multipart_within_the_prefix() -> None:
    policy = session_policy(Scope("exports", "ENG/", Access.WRITE), flavor=Flavor.RGW)
    objects, _deny, bucket = _statements(policy)
    assert _actions(objects) == _WRITE_OBJECT_ACTIONS
    assert objects["Resource"] == ["arn:aws:s3:::exports/ENG/*"]
    assert bucket["Action"] == ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    assert bucket["Condition"] == {"StringLike": {"s3:prefix": ["ENG/*"]}}


def test_minio_write_policy_uses_only_condition_keys_minio_accepts() -> None:
    """MinIO refuses the whole AssumeRole on s3:x-amz-acl (not a MinIO key) and on s3:prefix
    under s3:ListBucketMultipartUploads (minio/pkg policy/action.go): neither appears, and the
    uploads listing, which MinIO cannot confine to a prefix, is not granted."""
    policy = session_policy(Scope("exports", "ENG/", Access.WRITE), flavor=Flavor.MINIO)
    objects, bucket = _statements(policy)
    assert objects == {
        "Effect": "Allow",
        "Action": objects["Action"],
        "Resource": ["arn:aws:s3:::exports/ENG/*"],
    }
    assert _actions(objects) == _WRITE_OBJECT_ACTIONS
    assert bucket == {
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": ["arn:aws:s3:::exports"],
        "Condition": {"StringLike": {"s3:prefix": ["ENG/*"]}},
    }
    assert "x-amz-acl" not in json.dumps(policy)


@pytest.mark.parametrize("flavor", list(Flavor))
def test_whole_bucket_write_may_list_uploads_without_a_condition(flavor: Flavor) -> None:
    policy = session_policy(Scope("exports", "", Access.WRITE), flavor=flavor)
    bucket = _statements(policy)[-1]
    assert bucket == {
        "Effect": "Allow",
        "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
        "Resource": ["arn:aws:s3:::exports"],
    }


@pytest.mark.parametrize("flavor", list(Flavor))
def test_single_object_policy_names_one_object_and_grants_no_listing(flavor: Flavor) -> None:
    policy = session_policy(
        Scope("exports", "ENG/", Access.READ), flavor=flavor, object_key="a/b.pdf"
    )
    (only,) = _statements(policy)
    assert only["Resource"] == ["arn:aws:s3:::exports/ENG/a/b.pdf"]
    assert only["Action"] == ["s3:GetObject"]


@pytest.mark.parametrize("flavor", list(Flavor))
def test_rendered_policy_is_compact_ascii_json(flavor: Flavor) -> None:
    policy = session_policy(
        Scope("exports", "ENG/", Access.WRITE), flavor=flavor, object_key="été.txt"
    )
    text = render_policy(policy, flavor=flavor)
    assert " " not in text and "\n" not in text and text.isascii()
    assert json.loads(text) == policy


@pytest.mark.parametrize("flavor", list(Flavor))
def test_policy_over_the_limit_is_refused(flavor: Flavor) -> None:
    big = {"Version": "2012-10-17", "Statement": [{"Sid": "x" * MAX_POLICY_CHARS}]}
    with pytest.raises(InvalidRequest) as info:
        render_policy(big, flavor=flavor)
    assert info.value.code == "policy_too_large"


def test_minio_counts_the_policy_as_go_re_serialises_it() -> None:
    """MinIO measures json.Marshal of the parsed policy: `&` is six bytes (\\u0026) there,
    non-ASCII its UTF-8 bytes; RGW counts the ASCII JSON we send."""
    policy = {"Version": "2012-10-17", "Statement": [{"Sid": "&" * 400}]}
    sent = len(json.dumps(policy, separators=(",", ":")))
    assert policy_size(policy, Flavor.RGW) == sent
    assert policy_size(policy, Flavor.MINIO) == sent + 5 * 400
    render_policy(policy, flavor=Flavor.RGW)
    with pytest.raises(InvalidRequest):
        render_policy(policy, flavor=Flavor.MINIO)
    accented = {"Version": "2012-10-17", "Statement": [{"Sid": "é" * 10}]}
    base = len(
        json.dumps({"Version": "2012-10-17", "Statement": [{"Sid": ""}]}, separators=(",", ":"))
    )
    assert policy_size(accented, Flavor.MINIO) == base + 20  # two UTF-8 bytes each
    assert policy_size(accented, Flavor.RGW) == base + 60  # \\u00e9 each


def test_encoded_size_per_flavor() -> None:
    assert encoded_size("plain/key.txt", Flavor.MINIO) == len("plain/key.txt")
    assert encoded_size("plain/key.txt", Flavor.RGW) == len("plain/key.txt")
    assert encoded_size("a&b", Flavor.MINIO) == 8
    assert encoded_size("a&b", Flavor.RGW) == 3
    assert encoded_size("é", Flavor.MINIO) == 2
    assert encoded_size("é", Flavor.RGW) == 6
    assert encoded_size("😀", Flavor.MINIO) == 4
    assert encoded_size("😀", Flavor.RGW) == 12


@pytest.mark.parametrize("flavor", list(Flavor))
def test_worst_case_policy_fits_for_the_longest_bucket(flavor: Flavor) -> None:
    assert worst_case_policy_chars("b" * 63, "space/", flavor) <= MAX_POLICY_CHARS
    assert worst_case_policy_chars("b" * 63, "", flavor) <= MAX_POLICY_CHARS


@pytest.mark.parametrize("flavor", list(Flavor))
def test_longest_presign_put_policy_fits(flavor: Flavor) -> None:
    key = "k" * (MAX_KEY_CHARS - len("p/"))
    policy = session_policy(Scope("b" * 63, "p/", Access.WRITE), flavor=flavor, object_key=key)
    assert policy_size(policy, flavor) <= MAX_POLICY_CHARS
    assert len(render_policy(policy, flavor=flavor)) <= MAX_POLICY_CHARS


def test_key_cap_counts_what_minio_counts() -> None:
    """301 `&` are 301 characters to us and 1,806 bytes to MinIO: refused as too long there,
    before any policy is sent; the same key is fine on RGW."""
    key = "a" + "&" * 300
    scope = Scope("exports", "ENG/", Access.WRITE)
    session_policy(scope, flavor=Flavor.RGW, object_key=key)
    with pytest.raises(InvalidRequest) as info:
        session_policy(scope, flavor=Flavor.MINIO, object_key=key)
    assert info.value.code == "invalid_key"


@given(
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=MAX_KEY_CHARS),
    st.sampled_from(list(Flavor)),
)
def test_every_accepted_key_gives_a_policy_under_the_limit(key: str, flavor: Flavor) -> None:
    """The proof check-config relies on: whatever key a request sends, an accepted one yields
    a policy that fits on the longest bucket, as the server counts it."""
    scope = Scope("b" * 63, "space/", Access.WRITE)
    try:
        policy = session_policy(scope, flavor=flavor, object_key=key)
    except InvalidRequest:
        return
    assert policy_size(policy, flavor) <= worst_case_policy_chars("b" * 63, "space/", flavor)


def test_rgw_write_policies_deny_public_canned_acls() -> None:
    for object_key in (None, "a.txt"):
        policy = session_policy(
            Scope("exports", "ENG/", Access.WRITE), flavor=Flavor.RGW, object_key=object_key
        )
        denies = [s for s in _statements(policy) if s["Effect"] == "Deny"]
        assert denies == [
            {
                "Effect": "Deny",
                "Action": ["s3:PutObject"],
                "Resource": [_statements(policy)[0]["Resource"][0]],  # type: ignore[index]
                "Condition": {
                    "StringEquals": {
                        "s3:x-amz-acl": ["public-read", "public-read-write", "authenticated-read"]
                    }
                },
            }
        ]
    for flavor in Flavor:
        read = session_policy(Scope("exports", "ENG/", Access.READ), flavor=flavor)
        assert all(s["Effect"] == "Allow" for s in _statements(read))


_SEGMENT = st.text(
    alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), min_size=0, max_size=12
)


@given(st.lists(_SEGMENT, min_size=1, max_size=6), st.sampled_from(list(Flavor)))
def test_any_accepted_prefix_stays_inside_the_space(segments: list[str], flavor: Flavor) -> None:
    requested = "/".join(segments)
    try:
        prefix = narrow_prefix("ENG/", requested)
    except InvalidRequest:
        return
    assert prefix.startswith("ENG/") and prefix.endswith("/")
    assert not any(ch in prefix for ch in "*?$\"'\\ ")
    assert "/../" not in f"/{prefix}" and "//" not in prefix
    policy = session_policy(Scope("exports", prefix, Access.WRITE), flavor=flavor)
    for statement in _statements(policy):
        for resource in statement["Resource"]:  # type: ignore[attr-defined]
            assert resource in ("arn:aws:s3:::exports", f"arn:aws:s3:::exports/{prefix}*")


@given(st.text(max_size=40))
def test_normalize_prefix_is_idempotent_on_what_it_accepts(text: str) -> None:
    try:
        once = normalize_prefix(text)
    except InvalidRequest:
        return
    assert normalize_prefix(once) == once
