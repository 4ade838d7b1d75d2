"""Reading an STS AssumeRole answer (objectstore/sts.py): every field or nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from credbroker.errors import ObjectStoreRejected
from credbroker.objectstore.sts import _parse_assume_role

_FIELDS = {
    "AccessKeyId": "ASIAEXAMPLE",
    "SecretAccessKey": "s3cr3t",
    "SessionToken": "token-value",
    "Expiration": "2026-11-30T06:15:00.123456789Z",  # RGW sends nanoseconds
}


def _answer(fields: dict[str, str], *, extra: str = "") -> bytes:
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return (
        '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<AssumeRoleResult>{extra}<Credentials>{inner}</Credentials>"
        "<AssumedRoleUser><Arn>arn:aws:sts::x</Arn></AssumedRoleUser></AssumeRoleResult>"
        "</AssumeRoleResponse>"
    ).encode()


def test_reads_every_field() -> None:
    key = _parse_assume_role(_answer(_FIELDS))
    assert (key.access_key_id, key.secret_access_key, key.session_token) == (
        "ASIAEXAMPLE",
        "s3cr3t",
        "token-value",
    )
    assert key.expiration == datetime(2026, 11, 30, 6, 15, 0, 123456, tzinfo=UTC)


def test_first_occurrence_wins() -> None:
    decoy = "<Credentials><AccessKeyId>FIRST</AccessKeyId></Credentials>"
    assert _parse_assume_role(_answer(_FIELDS, extra=decoy)).access_key_id == "FIRST"


@pytest.mark.parametrize("missing", sorted(_FIELDS))
def test_a_missing_field_is_refused(missing: str) -> None:
    fields = {k: v for k, v in _FIELDS.items() if k != missing}
    with pytest.raises(ObjectStoreRejected, match="unreadable"):
        _parse_assume_role(_answer(fields))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"<html>proxy error</html>",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',  # entities: defusedxml refuses
        _answer({**_FIELDS, "Expiration": "not a time"}),
    ],
)
def test_unreadable_answers_are_refused(payload: bytes) -> None:
    with pytest.raises(ObjectStoreRejected, match="unreadable"):
        _parse_assume_role(payload)
