"""AES-256-GCM sealing of small files, shared by the embedded store and the fallback cache.

A sealed file is JSON: {"format", "nonce", "ciphertext"} with base64 values. The associated
data binds the ciphertext to its purpose, so one sealed file cannot be swapped for another.
Records inside a file can be sealed one by one too (seal_record), each bound to its own place
(the embedded store binds a secret's path and version).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from credbroker.errors import SealError

KEY_BYTES = 32
_NONCE_BYTES = 12


def load_key(*, env_var: str | None = None, key_file: Path | None = None) -> bytes:
    """A 256-bit key, base64 in an environment variable or a key file (env wins)."""
    encoded: str | None = None
    source = ""
    if env_var and os.environ.get(env_var):
        encoded, source = os.environ[env_var], f"environment variable {env_var}"
    elif key_file is not None:
        source = f"key file {key_file}"
        try:
            mode = stat.S_IMODE(key_file.stat().st_mode)
            encoded = key_file.read_text().strip()
        except OSError as exc:
            raise SealError(f"cannot read {source}: {exc.strerror}") from None
        if mode & 0o077:
            # The key opens every sealed secret: anyone else able to read it has them all.
            raise SealError(
                f"{source} is readable by group or others (mode {mode:04o}); "
                f"run: chmod 600 {key_file}"
            )
    if not encoded:
        raise SealError(
            f"no sealing key: set {env_var or 'a key environment variable'} or a key file"
        )
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SealError(f"sealing key in {source} is not base64") from None
    if len(key) != KEY_BYTES:
        raise SealError(f"sealing key in {source} must be {KEY_BYTES} bytes, base64-encoded")
    return key


def new_key() -> str:
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


def seal(key: bytes, plaintext: bytes, *, purpose: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, purpose.encode())
    envelope = {
        "format": f"credbroker-sealed-v1/{purpose}",
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    return json.dumps(envelope).encode()


def unseal(key: bytes, sealed: bytes, *, purpose: str) -> bytes:
    try:
        envelope = json.loads(sealed)
        if envelope["format"] != f"credbroker-sealed-v1/{purpose}":
            raise SealError(f"sealed file is not a {purpose} file")
        nonce = base64.b64decode(envelope["nonce"])
        ciphertext = base64.b64decode(envelope["ciphertext"])
        return AESGCM(key).decrypt(nonce, ciphertext, purpose.encode())
    except InvalidTag:
        raise SealError(f"cannot unseal the {purpose} file: wrong key or tampered file") from None
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise SealError(f"the {purpose} file is not a sealed credbroker file") from None


def seal_record(key: bytes, plaintext: bytes, *, bound_to: bytes) -> dict[str, str]:
    """One record sealed on its own, its associated data `bound_to` (what it belongs to, e.g.
    its path and version): {"nonce", "ciphertext"}, base64."""
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, bound_to)
    return {
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }


def unseal_record(key: bytes, record: Mapping[str, Any], *, bound_to: bytes) -> bytes:
    """The plaintext of a seal_record() record; SealError unless it was sealed with `key` for
    exactly `bound_to`."""
    try:
        nonce = base64.b64decode(record["nonce"], validate=True)
        ciphertext = base64.b64decode(record["ciphertext"], validate=True)
        return AESGCM(key).decrypt(nonce, ciphertext, bound_to)
    except InvalidTag:
        raise SealError("a sealed record was not sealed for this place or key") from None
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise SealError("a sealed record is malformed") from None


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, then rename: a crash leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary file: two writers (threads or processes) never share one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:  # mkstemp: mode 0600
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class SealedFile:
    """One sealed file with one purpose (ports.SealedCache): the read-only fallback's keys."""

    def __init__(self, path: Path, key: bytes, *, purpose: str) -> None:
        self.path = path
        self._key = key
        self._purpose = purpose

    def __str__(self) -> str:
        return str(self.path)

    def load(self) -> bytes | None:
        try:
            sealed = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SealError(f"cannot read {self.path}: {exc.strerror}") from None
        return unseal(self._key, sealed, purpose=self._purpose)

    def save(self, plaintext: bytes) -> None:
        write_atomically(self.path, seal(self._key, plaintext, purpose=self._purpose))
