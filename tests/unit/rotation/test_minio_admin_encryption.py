"""A FIPS build of MinIO encrypts admin answers as madmin-go format 0x02 (PBKDF2-SHA256 +
AES-GCM; madmin-go encrypt.go), which minio-py cannot decrypt: the drivers say so by name
instead of a bare "undecryptable answer"."""

from __future__ import annotations

import io

import pytest
from minio.crypto import decrypt, encrypt

from credbroker.objectstore.minio_admin import _undecryptable


class _Body:
    """What minio.crypto.decrypt reads from: a urllib3 response."""

    def __init__(self, data: bytes) -> None:
        self._io = io.BytesIO(data)

    def read(self, amount: int = -1) -> bytes:
        return self._io.read(amount)

    def close(self) -> None:
        return None

    def release_conn(self) -> None:
        return None


def _refusal(aead_id: int | None) -> ValueError:
    blob = bytearray(encrypt(b'{"accounts": []}', "admin-secret"))
    if aead_id is not None:
        blob[32] = aead_id  # salt (32 bytes) | AEAD id | nonce | chunks
    else:
        blob[-1] ^= 0xFF  # a tampered tag: the MAC check fails
    with pytest.raises(ValueError) as info:
        decrypt(_Body(bytes(blob)), "admin-secret")  # type: ignore[arg-type]
    return info.value


def test_a_fips_answer_is_named_as_such() -> None:
    error = _undecryptable("list users", "a+b", _refusal(0x02))
    assert error.code == "minio_fips_admin_encryption"
    assert "FIPS" in error.message and "0x02" in error.message


def test_any_other_undecryptable_answer_stays_generic() -> None:
    error = _undecryptable("list users", "a+b", _refusal(None))
    assert error.code != "minio_fips_admin_encryption"
    assert "undecryptable answer" in error.message
