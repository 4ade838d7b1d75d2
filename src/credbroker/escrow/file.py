"""The service key sealed to a public key whose private key only custodians can rebuild.

    credbroker escrow init --shares N --threshold K
        an X25519 key pair; the private key (32 bytes) is split as two 16-byte halves, each
        by pycryptodome's Shamir scheme (GF(2^128)) with the same share indices 1..N, so
        custodian i holds both halves' share i; K of them rebuild both halves. The private key
        is then forgotten: the file keeps the public key and a digest of each share.
    seal (every rotation's switch, and at start)
        ECIES: a fresh ephemeral X25519 key, HKDF-SHA256 of the shared secret (salt: both
        public keys) gives an AES-256-GCM key; the service key's JSON is sealed with the
        escrow's fingerprint, the key id and version as associated data. The broker needs no
        share to seal, so every rotation refreshes the escrow without the custodians, and the
        file is replaced atomically: it never holds more than the key in service.
    open (break-glass during an outage)
        K shares -> the private key -> it must match the public key (else the shares are
        wrong or too few) -> the service key. Nothing of it is kept.

A share's text: cbes1-<escrow fingerprint>-<index>-<64 hex digits>. The file holds no secret:
only whoever gathers K shares can open it. Whoever can write it could swap the public key for
their own, so `break_glass.escrow_fingerprint` in the (read-only) config pins it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from credbroker.domain import AccessKey
from credbroker.errors import EscrowError, EscrowSealed

FORMAT = "credbroker-escrow/1"
_INFO = b"credbroker escrow v1: service key"
_SHARE = re.compile(r"cbes1-([0-9a-f]{16})-([0-9]{1,3})-([0-9a-f]{64})")
MAX_SHARES = 255  # Shamir's share indices are one byte in pycryptodome


@dataclass(frozen=True, slots=True)
class NewEscrow:
    """What `init` hands out once: one share per custodian. Never written anywhere."""

    fingerprint: str
    threshold: int
    shares: tuple[str, ...]

    def __repr__(self) -> str:  # never the shares
        return f"NewEscrow({self.fingerprint}, {self.threshold} of {len(self.shares)})"


def share_fingerprint(share: str) -> str:
    """A short digest custodians can compare (printed next to each share, stored in the file)."""
    return hashlib.sha256(share.strip().encode()).hexdigest()[:16]


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _fingerprint(public: bytes) -> str:
    return hashlib.sha256(b"credbroker-escrow" + public).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not text")
    return base64.b64decode(text, validate=True)


class EscrowFile:
    """The escrow port on one JSON file (mode 0600, replaced atomically)."""

    def __init__(self, path: Path, *, pinned_fingerprint: str | None = None) -> None:
        self.path = path
        self._pinned = pinned_fingerprint

    # --- init -----------------------------------------------------------------------------

    @classmethod
    def init(
        cls, path: Path, *, shares: int, threshold: int, replace: bool = False
    ) -> tuple[EscrowFile, NewEscrow]:
        if not 2 <= threshold <= shares <= MAX_SHARES:
            raise EscrowError(f"need 2 <= threshold <= shares <= {MAX_SHARES}")
        if path.exists() and not replace:
            raise EscrowError(
                f"{path} exists: its custodians hold shares of it. Replacing it makes their "
                "shares useless (give --replace to do so)"
            )
        private = X25519PrivateKey.generate()
        secret = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = _raw(private.public_key())
        fingerprint = _fingerprint(public)
        low = Shamir.split(threshold, shares, secret[:16])
        high = Shamir.split(threshold, shares, secret[16:])
        texts = []
        for (index, a), (index_b, b) in zip(low, high, strict=True):
            assert index == index_b
            texts.append(f"cbes1-{fingerprint}-{index}-{(a + b).hex()}")
        del secret, private, low, high
        document = {
            "format": FORMAT,
            "public_key": _b64(public),
            "fingerprint": fingerprint,
            "threshold": threshold,
            "shares": shares,
            "share_fingerprints": {str(i + 1): share_fingerprint(t) for i, t in enumerate(texts)},
            "created_at": datetime.now(UTC).isoformat(),
            "sealed": None,
        }
        escrow = cls(path)
        escrow._write(document)
        return escrow, NewEscrow(fingerprint, threshold, tuple(texts))

    # --- the Escrow port ------------------------------------------------------------------

    @property
    def threshold(self) -> int:
        return int(self._document()["threshold"])

    @property
    def fingerprint(self) -> str:
        return str(self._document()["fingerprint"])

    def share_index(self, share: str) -> int:
        document = self._document()
        match = _SHARE.fullmatch(share.strip())
        if match is None:
            raise EscrowError("not an escrow share (cbes1-<fingerprint>-<index>-<hex>)")
        if match.group(1) != document["fingerprint"]:
            raise EscrowError(
                f"that share belongs to escrow {match.group(1)}, not to this one "
                f"({document['fingerprint']}): it was replaced by a later `escrow init`"
            )
        index = int(match.group(2))
        expected = document["share_fingerprints"].get(str(index))
        if expected is None or not hmac.compare_digest(expected, share_fingerprint(share)):
            raise EscrowError(f"share {index} is not this escrow's share {index} (a typo?)")
        return index

    def open(self, shares: list[str]) -> AccessKey:
        document = self._document()
        sealed = document.get("sealed")
        if not sealed:
            raise EscrowSealed("the escrow holds no key yet (the broker seals it at start)")
        parsed: dict[int, bytes] = {}
        for share in shares:
            index = self.share_index(share)
            match = _SHARE.fullmatch(share.strip())
            assert match is not None
            parsed[index] = bytes.fromhex(match.group(3))
        if len(parsed) < int(document["threshold"]):
            raise EscrowSealed(
                f"{len(parsed)} different shares given; the escrow needs {document['threshold']}"
            )
        low = Shamir.combine([(i, s[:16]) for i, s in parsed.items()])
        high = Shamir.combine([(i, s[16:]) for i, s in parsed.items()])
        private = X25519PrivateKey.from_private_bytes(low + high)
        del low, high
        public = _unb64(document["public_key"])
        if not hmac.compare_digest(_raw(private.public_key()), public):
            raise EscrowError("the shares do not open this escrow")
        try:
            ephemeral = X25519PublicKey.from_public_bytes(_unb64(sealed["ephemeral"]))
            key = _kdf(private.exchange(ephemeral), _raw(ephemeral), public)
            plaintext = AESGCM(key).decrypt(
                _unb64(sealed["nonce"]), _unb64(sealed["ciphertext"]), _aad(document, sealed)
            )
            data = json.loads(plaintext)
            return AccessKey(
                access_key_id=str(data["access_key_id"]),
                secret_access_key=str(data["secret_access_key"]),
                version=int(data["version"]),
            )
        except (InvalidTag, ValueError, KeyError, TypeError):
            raise EscrowError(f"{self.path}: the sealed key is damaged or tampered") from None

    def sealed_key_id(self) -> str | None:
        sealed = self._document().get("sealed")
        return str(sealed["key_id"]) if sealed else None

    def sealed_version(self) -> int | None:
        sealed = self._document().get("sealed")
        return int(sealed["version"]) if sealed else None

    def seal(self, key: AccessKey) -> None:
        document = self._document()
        public = _unb64(document["public_key"])
        ephemeral = X25519PrivateKey.generate()
        ephemeral_public = _raw(ephemeral.public_key())
        aes = _kdf(
            ephemeral.exchange(X25519PublicKey.from_public_bytes(public)), ephemeral_public, public
        )
        sealed = {
            "key_id": key.access_key_id,
            "version": key.version,
            "sealed_at": datetime.now(UTC).isoformat(),
            "ephemeral": _b64(ephemeral_public),
        }
        nonce = secrets.token_bytes(12)
        plaintext = json.dumps(
            {
                "access_key_id": key.access_key_id,
                "secret_access_key": key.secret_access_key,
                "version": key.version,
            }
        ).encode()
        sealed["nonce"] = _b64(nonce)
        sealed["ciphertext"] = _b64(AESGCM(aes).encrypt(nonce, plaintext, _aad(document, sealed)))
        self._write({**document, "sealed": sealed})

    def status(self) -> dict[str, Any]:
        """What `credbroker escrow status` shows: no secret is in the file anyway."""
        document = self._document()
        sealed = document.get("sealed") or {}
        return {
            "path": str(self.path),
            "fingerprint": document["fingerprint"],
            "threshold": document["threshold"],
            "shares": document["shares"],
            "share_fingerprints": document["share_fingerprints"],
            "sealed_key_id": sealed.get("key_id"),
            "sealed_version": sealed.get("version"),
            "sealed_at": sealed.get("sealed_at"),
        }

    # --- the file -------------------------------------------------------------------------

    def _document(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise EscrowSealed(
                f"no escrow at {self.path}: create it with `credbroker escrow init`"
            ) from None
        except (OSError, ValueError) as exc:
            raise EscrowError(f"cannot read the escrow {self.path}: {type(exc).__name__}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise EscrowError(f"{self.path} is not a credbroker escrow")
        try:
            public = _unb64(document["public_key"])
        except (KeyError, ValueError):
            raise EscrowError(f"{self.path}: no valid public key") from None
        if document.get("fingerprint") != _fingerprint(public):
            raise EscrowError(f"{self.path}: the public key does not match its fingerprint")
        if self._pinned is not None and not hmac.compare_digest(self._pinned, _fingerprint(public)):
            raise EscrowError(
                f"{self.path} is escrow {_fingerprint(public)}, not the one the config pins "
                f"(break_glass.escrow_fingerprint {self._pinned}): refused"
            )
        return document

    def _write(self, document: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def _kdf(shared: bytes, ephemeral: bytes, public: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + public, info=_INFO).derive(
        shared
    )


def _aad(document: dict[str, Any], sealed: dict[str, Any]) -> bytes:
    return json.dumps(
        [FORMAT, document["fingerprint"], sealed["key_id"], sealed["version"], sealed["ephemeral"]]
    ).encode()
