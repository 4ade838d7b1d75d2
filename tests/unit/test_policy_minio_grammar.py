"""Every session policy shape the broker can build for MinIO passes MinIO's own parser (the
port of minio/pkg v3.1.3 in tests/doubles/minio_policy.py), and the broker counts its size
exactly as MinIO does (Go's re-marshalled bytes). RGW's policies, which carry what MinIO has
no grammar for, are shown to be refused, so the flavours cannot be mixed up unnoticed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credbroker.domain import Access, Flavor, Scope
from credbroker.errors import InvalidRequest
from credbroker.policy import (
    MAX_KEY_CHARS,
    MAX_POLICY_CHARS,
    MAX_PREFIX_CHARS,
    narrow_prefix,
    policy_size,
    render_policy,
    session_policy,
)
from tests.doubles.minio_policy import PolicyError, go_marshal, parse_policy

LONGEST_BUCKET = "b" * 63
SPACE_PREFIXES = ["", "ENG/", "people/hr/", "p" * 60 + "/"]
LONGEST_REQUEST_PREFIX = "x" * 200


def _shapes() -> list[tuple[str, Scope, str | None]]:
    shapes: list[tuple[str, Scope, str | None]] = []
    for space in SPACE_PREFIXES:
        room = MAX_PREFIX_CHARS - len(space)
        narrowed = [space, narrow_prefix(space, "reports/2026"), space + "y" * (room - 1) + "/"]
        for access in Access:
            for prefix in narrowed:
                shapes.append(
                    (f"{access.value} {prefix[:20]!r}", Scope("exports", prefix, access), None)
                )
            for key in (
                "a.txt",
                "dir/é-ü.pdf",
                "a&b=c+d.txt",
                "k" * (MAX_KEY_CHARS - len(space)),
                "&" * ((MAX_KEY_CHARS - len(space)) // 6),
                "😀" * ((MAX_KEY_CHARS - len(space)) // 4),
            ):
                shapes.append(
                    (f"presign {access.value} {key[:10]!r}", Scope("exports", space, access), key)
                )
    return shapes


SHAPES = _shapes()


@pytest.mark.parametrize(("name", "scope", "key"), SHAPES, ids=[s[0] for s in SHAPES])
def test_minio_parses_every_shape_and_counts_its_size_as_the_broker_does(
    name: str, scope: Scope, key: str | None
) -> None:
    for bucket in ("exports", LONGEST_BUCKET):
        bucketed = Scope(bucket, scope.prefix, scope.access)
        policy = session_policy(bucketed, flavor=Flavor.MINIO, object_key=key)
        text = render_policy(policy, flavor=Flavor.MINIO)  # the form value sent
        parsed = parse_policy(text)
        measured = len(go_marshal(parsed))
        assert measured == policy_size(policy, Flavor.MINIO)
        assert measured <= MAX_POLICY_CHARS


@given(
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=MAX_KEY_CHARS),
    st.sampled_from(SPACE_PREFIXES),
    st.sampled_from(list(Access)),
)
def test_any_accepted_key_yields_a_policy_minio_accepts(
    key: str, space: str, access: Access
) -> None:
    try:
        policy = session_policy(
            Scope(LONGEST_BUCKET, space, access), flavor=Flavor.MINIO, object_key=key
        )
    except InvalidRequest:
        return
    parsed = parse_policy(render_policy(policy, flavor=Flavor.MINIO))
    assert len(go_marshal(parsed)) == policy_size(policy, Flavor.MINIO) <= MAX_POLICY_CHARS


def test_rgw_write_policies_are_refused_by_minio() -> None:
    """Why the flavours differ: RGW's write policy, sent to MinIO, fails the whole vend."""
    for key in (None, "a.txt"):
        policy = session_policy(
            Scope("exports", "ENG/", Access.WRITE), flavor=Flavor.RGW, object_key=key
        )
        with pytest.raises(PolicyError, match="s3:x-amz-acl"):
            parse_policy(render_policy(policy, flavor=Flavor.RGW))
    read = session_policy(Scope("exports", "ENG/", Access.READ), flavor=Flavor.RGW)
    parse_policy(render_policy(read, flavor=Flavor.RGW))  # reads are the same on both
