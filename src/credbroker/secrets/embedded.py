"""The embedded secret store: one local file sealed with AES-256-GCM. Zero set-up default.

Same semantics as Vault KV v2 (versions, check-and-set), so rotation and the contract suite
treat it like any other store. Several processes (the server and `credbroker secrets put`)
may share the file: writers take an exclusive flock, readers notice a new file by its
inode, size and mtime and re-read it.
"""

from __future__ import annotations

import asyncio
import copy
import fcntl
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from credbroker.domain import SecretVersion
from credbroker.errors import CasMismatch, InvalidRequest, SecretNotFound
from credbroker.secrets.sealing import seal, unseal, write_atomically

_PURPOSE = "embedded-secrets"
_KEEP_VERSIONS = 10


class EmbeddedSecretStore:
    kind = "embedded"
    writable = True

    def __init__(self, path: Path, key: bytes) -> None:
        self._path = path
        self._key = key
        self._lock = asyncio.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._contents: dict[str, Any] = {"secrets": {}}

    # --- reading --------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        """The decrypted contents, re-read only when the file changed on disk."""
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            self._stamp, self._contents = None, {"secrets": {}}
            return self._contents
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            contents = json.loads(unseal(self._key, self._path.read_bytes(), purpose=_PURPOSE))
            self._contents = contents
            self._stamp = stamp
        return self._contents

    async def read(self, path: str) -> SecretVersion:
        entry = self._load()["secrets"].get(_check_path(path))
        if entry is None:
            raise SecretNotFound(f"no secret at {path!r} in the embedded store")
        current = entry["current"]
        return SecretVersion(data=dict(entry["versions"][str(current)]["data"]), version=current)

    async def read_version(self, path: str, version: int) -> SecretVersion:
        entry = self._load()["secrets"].get(_check_path(path))
        kept = entry["versions"].get(str(version)) if entry else None
        if kept is None:
            raise SecretNotFound(f"no version {version} of {path!r} in the embedded store")
        return SecretVersion(data=dict(kept["data"]), version=version)

    async def versions(self, path: str) -> list[int]:
        entry = self._load()["secrets"].get(_check_path(path))
        return sorted(int(v) for v in entry["versions"]) if entry else []

    # --- writing --------------------------------------------------------------------------

    async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
        _check_path(path)
        values = {str(k): str(v) for k, v in data.items()}
        async with self._lock:
            return await asyncio.to_thread(self._write_locked, path, values, cas)

    def _write_locked(self, path: str, data: dict[str, str], cas: int | None) -> int:
        lock_path = self._path.with_name(self._path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            # A copy: nothing may change what readers see until the new file is on disk. A
            # failed write must leave the old version current, in memory as on disk.
            contents = copy.deepcopy(self._load())
            entry = contents["secrets"].get(path)
            current = entry["current"] if entry else 0
            if cas is not None and cas != current:
                raise CasMismatch(
                    f"check-and-set for {path!r} expected version {cas}, found {current}"
                )
            version = current + 1
            entry = entry or {"current": 0, "versions": {}}
            entry["versions"][str(version)] = {
                "data": data,
                "created_time": datetime.now(UTC).isoformat(),
            }
            entry["current"] = version
            for old in sorted(int(v) for v in entry["versions"])[:-_KEEP_VERSIONS]:
                del entry["versions"][str(old)]
            contents["secrets"][path] = entry
            plaintext = json.dumps(contents, sort_keys=True).encode()
            try:
                write_atomically(self._path, seal(self._key, plaintext, purpose=_PURPOSE))
            finally:
                self._stamp = None  # re-read whatever is on disk now
            return version

    async def check(self) -> None:
        self._load()

    async def close(self) -> None:
        return None


def _check_path(path: str) -> str:
    if not path or path.startswith("/") or ".." in path.split("/"):
        raise InvalidRequest(f"invalid secret path {path!r}", code="invalid_secret_path")
    return path
