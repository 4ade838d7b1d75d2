"""The port of minio/pkg v3.1.3's IAM policy package (tests/doubles/minio_policy.py).

Cases marked "statement_test.go" etc. are MinIO's own test cases, ported with the error text
MinIO's code produces for them; the rest pin behaviour read from the source file named.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.doubles.minio_policy import (
    PolicyError,
    go_marshal,
    is_allowed,
    parse_policy,
    wildcard_match,
)


def _policy(*statements: dict[str, Any], version: str = "2012-10-17") -> str:
    return json.dumps({"Version": version, "Statement": list(statements)})


def _refusal(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    return info.value.message


# --- the two write-policy shapes credbroker built before issue 7 ------------------------------

ACL_DENY = {
    "Effect": "Deny",
    "Action": ["s3:PutObject"],
    "Resource": ["arn:aws:s3:::b/ENG/*"],
    "Condition": {
        "StringEquals": {"s3:x-amz-acl": ["public-read", "public-read-write", "authenticated-read"]}
    },
}
UPLOADS_WITH_PREFIX = {
    "Effect": "Allow",
    "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
    "Resource": ["arn:aws:s3:::b"],
    "Condition": {"StringLike": {"s3:prefix": ["ENG/*"]}},
}
WRITE_OBJECTS = {
    "Effect": "Allow",
    "Action": [
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
    ],
    "Resource": ["arn:aws:s3:::b/ENG/*"],
}


def test_the_old_write_policy_is_refused_for_its_acl_condition_key() -> None:
    # policy/condition/key.go parseKey: s3:x-amz-acl is not in AllSupportedKeys.
    text = _policy(WRITE_OBJECTS, ACL_DENY, UPLOADS_WITH_PREFIX)
    assert _refusal(text) == "invalid condition key 's3:x-amz-acl'"


def test_without_the_acl_deny_the_prefix_on_list_uploads_is_refused() -> None:
    # policy/action.go: s3:ListBucketMultipartUploads accepts CommonKeys only;
    # policy/statement.go isValid names the keys left over.
    text = _policy(WRITE_OBJECTS, UPLOADS_WITH_PREFIX)
    assert _refusal(text) == (
        "unsupported condition keys '[s3:prefix]' used for action 's3:ListBucketMultipartUploads'"
    )


def test_listing_under_a_prefix_condition_and_whole_bucket_uploads_are_accepted() -> None:
    listing = {**UPLOADS_WITH_PREFIX, "Action": ["s3:ListBucket"]}
    uploads = {
        "Effect": "Allow",
        "Action": ["s3:ListBucketMultipartUploads"],
        "Resource": "arn:aws:s3:::b",
    }
    parse_policy(_policy(WRITE_OBJECTS, listing, uploads))


# --- statement_test.go TestStatementIsValid / TestStatementUnmarshalJSONAndValidate -----------

OBJ = "arn:aws:s3:::mybucket/myobject*"


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        # Invalid effect.
        (
            {"Effect": "foo", "Action": ["s3:GetBucketLocation", "s3:PutObject"], "Resource": "*"},
            "invalid Effect foo",
        ),
        # Missing effect (case5).
        ({"Action": "s3:PutObject", "Resource": OBJ}, "invalid Effect "),
        # Empty actions (case7).
        ({"Effect": "Allow", "Resource": OBJ}, "Action must not be empty"),
        ({"Effect": "Allow", "Action": [], "Resource": OBJ}, "empty actions not allowed"),
        # Empty resources (case8).
        ({"Effect": "Allow", "Action": "s3:PutObject"}, "Resource must not be empty"),
        # Empty condition (case9): an unmarshalling error.
        (
            {"Effect": "Allow", "Action": "s3:PutObject", "Resource": OBJ, "Condition": {}},
            "condition must not be empty",
        ),
        # Unsupported condition key for GetObject (case10).
        (
            {
                "Effect": "Deny",
                "Action": ["s3:PutObject", "s3:GetObject"],
                "Resource": OBJ,
                "Condition": {"StringEquals": {"s3:x-amz-copy-source": "yourbucket/myobject*"}},
            },
            "unsupported condition keys '[s3:x-amz-copy-source]' used for action 's3:GetObject'",
        ),
        # Unsupported conditions for GetObject (IpAddress + copy source).
        (
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": OBJ,
                "Condition": {
                    "IpAddress": {"aws:SourceIp": "192.168.1.0/24"},
                    "StringEquals": {"s3:x-amz-copy-source": "mybucket/myobject"},
                },
            },
            "unsupported condition keys '[s3:x-amz-copy-source]' used for action 's3:GetObject'",
        ),
        # Admin actions with S3 condition keys.
        (
            {
                "Effect": "Allow",
                "Action": ["admin:CreateUser", "admin:DeleteUser"],
                "Condition": {
                    "StringEquals": {
                        "s3:x-amz-copy-source": "mybucket/myobject",
                        "aws:UserAgent": "NSPlayer",
                    }
                },
            },
            "unsupported condition keys '[s3:x-amz-copy-source]' used for action "
            "'admin:CreateUser'",
        ),
        (
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": OBJ, "NotResource": OBJ},
            "Resource and NotResource cannot be specified in the same statement",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "NotAction": "s3:PutObject",
                "Resource": OBJ,
            },
            "Action and NotAction cannot be specified in the same statement",
        ),
        # action_test.go TestActionIsValid: "foo" is no action.
        ({"Effect": "Allow", "Action": "foo", "Resource": OBJ}, "unsupported action 'foo'"),
        (
            {"Effect": "Allow", "Action": "s3:PutObjec", "Resource": OBJ},
            "unsupported action 's3:PutObjec'",
        ),
        (
            {"Effect": "Allow", "Action": ["admin:CreateUser", "s3:GetObject"]},
            "unsupported admin action 's3:GetObject'",
        ),
        # resource.go parseResource / IsValid
        (
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "b/x"},
            "invalid resource 'b/x'",
        ),
        (
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::/b"},
            "invalid resource 'arn:aws:s3:::/b' - starts with '/' will not match a bucket",
        ),
        (
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::"},
            "invalid resource",
        ),
        (
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:minio:kms:::key"},
            "resource 'arn:minio:kms:::key' type is not S3",
        ),
        # condition/name.go, key.go (key_test.go TestKeyUnmarshalJSON: "foo")
        (
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {"StringEqual": {"s3:prefix": "a"}},
            },
            "invalid condition name 'StringEqual'",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {"StringEquals": {"foo": "a"}},
            },
            "invalid condition key 'foo'",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {"StringLike": {"s3:prefix": 1}},
            },
            "value must be a string for StringLike condition",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {"StringLike": {"s3:prefix": ["a", "a"]}},
            },
            "duplicate value found 'a'",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {"Null": {"s3:prefix": "maybe"}},
            },
            "value must be a boolean string for Null condition",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {"Bool": {"s3:prefix": "true"}},
            },
            "only aws:SecureTransport key is allowed for Bool condition",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {"NumericLessThan": {"s3:max-keys": "ten"}},
            },
            'value ten must be a int for NumericLessThan condition: strconv.Atoi: parsing "ten": '
            "invalid syntax",
        ),
        (
            {
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": OBJ,
                "Condition": {"StringEquals": {"s3:x-amz-server-side-encryption": "DES"}},
            },
            "invalid value 'DES' for 's3:x-amz-server-side-encryption' for StringEquals condition",
        ),
        # keyname.go: s3:max-keys only for the listing actions
        (
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": OBJ,
                "Condition": {"NumericEquals": {"s3:max-keys": 10}},
            },
            "unsupported condition keys '[s3:max-keys]' used for action 's3:GetObject'",
        ),
    ],
)
def test_statements_minio_refuses(statement: dict[str, Any], message: str) -> None:
    assert _refusal(_policy(statement)) == message


@pytest.mark.parametrize(
    "statement",
    [
        {"Sid": "SomeId1", "Effect": "Allow", "Action": "s3:PutObject", "Resource": OBJ},  # case1
        {  # case2: Null with a JSON bool
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": OBJ,
            "Condition": {"Null": {"s3:x-amz-copy-source": True}},
        },
        {  # case3: Null with a string, on PutObject and GetObject
            "Effect": "Deny",
            "Action": ["s3:PutObject", "s3:GetObject"],
            "Resource": OBJ,
            "Condition": {"Null": {"s3:x-amz-server-side-encryption": "false"}},
        },
        {"Effect": "Deny", "NotAction": ["s3:PutObject", "s3:GetObject"], "Resource": OBJ},  # 11
        {"Effect": "Allow", "Action": "s3:GetObject", "NotResource": OBJ},  # case12
        {
            "Effect": "Allow",
            "Action": ["s3:GetBucketLocation", "s3:PutObject"],
            "Resource": "arn:aws:s3:::mybucket",
        },
        {
            "Effect": "Deny",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": OBJ,
            "Condition": {"IpAddress": {"aws:SourceIp": "192.168.1.0/24"}},
        },
        {"Effect": "Allow", "Action": ["admin:CreateUser", "admin:DeleteUser"]},
        # policy_test.go TestPolicyParseConfig: wildcard actions merge the keys they match.
        {
            "Effect": "Allow",
            "Action": "s3:Get*",
            "Resource": "arn:aws:s3:::test/HappyFace.jpg",
            "Condition": {"StringEquals": {"s3:versionid": "AaaH"}},
        },
        {
            "Effect": "Allow",
            "Action": "s3:CreateBucket",
            "Resource": "arn:aws:s3:::*",
            "Condition": {"StringLike": {"s3:LocationConstraint": "us-east-1"}},
        },
        # A key with a variable is checked by its name (condition/key.go KeySet.Match).
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": OBJ,
            "Condition": {"StringEquals": {"s3:ExistingObjectTag/owner": "x"}},
        },
        # sts-action.go: a bare "*" is an STS action; resources are not looked at.
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
    ],
)
def test_statements_minio_accepts(statement: dict[str, Any]) -> None:
    parse_policy(_policy(statement))


def test_policy_level_checks() -> None:
    # policy.go isValid / encoding/json
    assert _refusal(_policy(WRITE_OBJECTS, version="2012-10-18")) == "invalid version '2012-10-18'"
    assert _refusal('{"Version": 1}') == (
        "json: cannot unmarshal number into Go struct field subPolicy.Version of type string"
    )
    assert _refusal("[]") == "json: cannot unmarshal array into Go value of type policy.subPolicy"
    assert _refusal("   ") == "EOF"
    assert _refusal('{"Version": "2012-10-17", "Statement": [{"Effect": 1}]}') == (
        "json: cannot unmarshal number into Go struct field Statement.Statement.Effect of type "
        "policy.Effect"
    )
    # An empty version passes ParseConfig (STS refuses it separately), unknown fields are
    # ignored (Policy.UnmarshalJSON decodes without DisallowUnknownFields), field names match
    # case-insensitively, and a single string stands for a one-element list.
    parsed = parse_policy(
        '{"version": "2012-10-17", "Principal": "x", "statement": [{"effect": "Allow", '
        '"action": "s3:GetObject", "resource": "arn:aws:s3:::b/*"}]}'
    )
    assert parsed.version == "2012-10-17"
    assert parse_policy("{}").version == ""


def test_duplicate_statements_are_dropped_before_marshalling() -> None:
    # policy.go dropDuplicateStatements: the Sid is not compared.
    first = {**WRITE_OBJECTS, "Sid": "one"}
    second = {**WRITE_OBJECTS, "Sid": "two"}
    parsed = parse_policy(_policy(first, second))
    assert parsed.statements is not None and len(parsed.statements) == 1


# --- Go's json.Marshal of the parsed policy ---------------------------------------------------


def test_marshal_follows_the_struct_tags() -> None:
    parsed = parse_policy(
        _policy(
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {"StringLike": {"s3:prefix": "ENG/*"}},
            }
        )
    )
    assert go_marshal(parsed) == (
        b'{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:ListBucket"],'
        b'"Resource":["arn:aws:s3:::b"],"Condition":{"StringLike":{"s3:prefix":["ENG/*"]}}}]}'
    )


def test_ampersands_count_six_bytes_each_and_non_ascii_its_utf8_bytes() -> None:
    def size(key: str) -> int:
        statement = {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::b/{key}",
        }
        return len(go_marshal(parse_policy(_policy(statement))))

    base = size("k")
    assert size("k" + "&" * 301) == base + 301 * 6  # \u0026
    assert size("k<>") == base + 12  # \u003c \u003e
    assert size("kéé") == base + 4  # two bytes each in UTF-8
    assert size("k€") == base + 3
    assert size("k\u2028") == base + 6  # Go escapes U+2028 too
    # The raw text the broker sends counts the same & once, as ASCII JSON: MinIO's count is
    # the re-marshalled one (cmd/sts-handlers.go populateSessionPolicy).
    raw = _policy(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/" + "&" * 301}
    )
    assert len(go_marshal(parse_policy(raw))) > len(raw) + 1400


def test_marshal_normalises_condition_values_as_go_does() -> None:
    parsed = parse_policy(
        _policy(
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "*",
                "Condition": {
                    "NumericLessThan": {"s3:max-keys": "10"},
                    "IpAddress": {"aws:SourceIp": "10.1.2.3/8"},
                    "Bool": {"aws:SecureTransport": True},
                },
            }
        )
    )
    assert go_marshal(parsed) == (
        b'{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:ListBucket"],'
        b'"Resource":["**"],"Condition":{"Bool":{"aws:SecureTransport":["true"]},'
        b'"IpAddress":{"aws:SourceIp":["10.0.0.0/8"]},"NumericLessThan":{"s3:max-keys":[10]}}}]}'
    )


def test_a_notaction_statement_cannot_be_marshalled() -> None:
    # Statement.Action has no omitempty and ActionSet.MarshalJSON refuses an empty set.
    parsed = parse_policy(_policy({"Effect": "Deny", "NotAction": "s3:GetObject", "Resource": "*"}))
    with pytest.raises(PolicyError, match="empty actions not allowed"):
        go_marshal(parsed)


# --- evaluation (policy.go IsAllowed, statement.go, condition/*.go, wildcard/match.go) --------

SCOPED = parse_policy(
    _policy(
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::b/ENG/*"]},
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": ["arn:aws:s3:::b"],
            "Condition": {"StringLike": {"s3:prefix": ["ENG/*"]}},
        },
    )
)


def test_objects_inside_the_prefix_only() -> None:
    assert is_allowed([SCOPED], "s3:GetObject", "b", "ENG/page.html")
    assert not is_allowed([SCOPED], "s3:GetObject", "b", "HR/page.html")
    assert not is_allowed([SCOPED], "s3:GetObject", "c", "ENG/page.html")
    assert not is_allowed([SCOPED], "s3:PutObject", "b", "ENG/page.html")
    assert not is_allowed([], "s3:GetObject", "b", "ENG/page.html")


def test_listing_needs_a_prefix_inside_the_scope() -> None:
    assert is_allowed([SCOPED], "s3:ListBucket", "b", "", {"prefix": ["ENG/"]})
    assert is_allowed([SCOPED], "s3:ListBucket", "b", "", {"s3:prefix": ["ENG/sub/"]})
    assert not is_allowed([SCOPED], "s3:ListBucket", "b", "", {"prefix": ["HR/"]})
    assert not is_allowed([SCOPED], "s3:ListBucket", "b", "", {"prefix": [""]})
    assert not is_allowed([SCOPED], "s3:ListBucket", "b", "", {})  # StringLike, no value


def test_deny_wins_and_string_conditions() -> None:
    deny = parse_policy(
        _policy(
            # "b/*" also matches the bucket itself ("b/"): wildcard "*" matches nothing too.
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
            {
                "Effect": "Deny",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {"StringNotLike": {"s3:prefix": "ENG/*"}},
            },
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {"StringEquals": {"s3:delimiter": "/"}},
            },
        )
    )
    assert is_allowed([deny], "s3:ListBucket", "b", "", {"prefix": ["ENG/"], "delimiter": ["/"]})
    assert not is_allowed([deny], "s3:ListBucket", "b", "", {"prefix": ["HR/"], "delimiter": ["/"]})
    assert not is_allowed(
        [deny], "s3:ListBucket", "b", "", {"prefix": ["ENG/"], "delimiter": ["-"]}
    )
    # Merged policies: a Deny in one beats an Allow in another.
    assert is_allowed([SCOPED], "s3:GetObject", "b", "ENG/x")
    block = parse_policy(
        _policy({"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::b/ENG/x"})
    )
    assert not is_allowed([SCOPED, block], "s3:GetObject", "b", "ENG/x")


def test_get_object_version_grants_get_object_and_bucket_arn_matches_bucket_actions() -> None:
    # actionset.go Match special case; resource.go Match: path.Clean("b/") == "b".
    p = parse_policy(
        _policy(
            {"Effect": "Allow", "Action": "s3:GetObjectVersion", "Resource": "arn:aws:s3:::b/*"},
            {"Effect": "Allow", "Action": "s3:GetBucketLocation", "Resource": "arn:aws:s3:::b"},
        )
    )
    assert is_allowed([p], "s3:GetObject", "b", "x")
    assert is_allowed([p], "s3:GetBucketLocation", "b")
    assert not is_allowed([p], "s3:GetBucketLocation", "bb")


def test_policy_variables_are_substituted() -> None:
    p = parse_policy(
        _policy(
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::b/${aws:username}/*",
            }
        )
    )
    assert is_allowed([p], "s3:GetObject", "b", "alice/x", {"username": ["alice"]})
    assert not is_allowed([p], "s3:GetObject", "b", "bob/x", {"username": ["alice"]})


@pytest.mark.parametrize(
    ("pattern", "name", "matched"),
    [
        ("*", "anything", True),
        ("", "", True),
        ("", "a", False),
        ("b/ENG/*", "b/ENG/x/y", True),
        ("b/ENG/*", "b/ENGX", False),
        ("s3:Get*", "s3:GetObject", True),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a?c", "aéc", False),  # '?' is one byte, 'é' two
        ("a??c", "aéc", True),
        ("*a*b*", "xaxxbx", True),
    ],
)
def test_wildcard_matches_as_minio_pkg_does(pattern: str, name: str, matched: bool) -> None:
    assert wildcard_match(pattern, name) is matched
