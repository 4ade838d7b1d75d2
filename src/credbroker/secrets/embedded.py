"""The embedded secret store: one local file sealed with AES-256-GCM. Zero set-up default.

Same semantics as Vault KV v2 (versions, check-and-set), so rotation and the contract suite
treat it like any other store. Several processes (the server and `credbroker secrets put`)
may share the file: writers take an exclusive flock, readers notice a new file by its
inode, size and mtime and re-read it.

Rollback and swap protection (file format 2). The whole file is sealed for its purpose, and
inside it each version of each secret is sealed again on its own, bound (AEAD associated data)
to its path and version number: a record moved to another path or version does not open. The
highest version seen of each path is remembered outside the file (ports.VersionWatermark, a
table in the rotation state store), so a file put back to an older copy shows a lower version
than remembered and is refused (SecretRolledBack): never read, written over, vended or rotated
on. A format-1 file (records not sealed one by one, written by earlier releases) is still read,
and is rewritten as format 2 by the next write.
"""

from __future__ import annotations

import asyncio
import copy
import fcntl
import json
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from credbroker.domain import SecretVersion
from credbroker.errors import (
    CasMismatch,
    InvalidRequest,
    SealError,
    SecretNotFound,
    SecretRolledBack,
)
from credbroker.ports import VersionWatermark
from credbroker.secrets.sealing import seal, seal_record, unseal, unseal_record, write_atomically

log = logging.getLogger("credbroker.secrets.embedded")

_PURPOSE = "embedded-secrets"
_FORMAT = 2  # 1: records in clear inside the sealed file; 2: each record sealed and bound
_KEEP_VERSIONS = 10


class EmbeddedSecretStore:
    kind = "embedded"
    writable = True

    def __init__(
        self,
        path: Path,
        key: bytes,
        *,
        watermark: VersionWatermark | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        """`watermark`: where the highest version seen of each path is kept (closed with this
        store); without one, only this process's memory remembers. `on_refused` is called with
        "rolled_back" or "swapped" on each refusal (a metric)."""
        self._path = path
        self._key = key
        self._watermark = watermark
        self._on_refused = on_refused
        # Which store, for the watermark: the file's own location.
        self._name = str(path.resolve())
        self._lock = asyncio.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._contents: dict[str, Any] = {"secrets": {}}
        # The highest version known of each path (the watermark's answer, or what this
        # process saw), and the paths checked against the watermark since the file changed.
        self._floors: dict[str, int] = {}
        self._checked: set[str] = set()
        self._logged: set[tuple[str, int, int]] = set()

    # --- reading --------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        """The decrypted contents, re-read only when the file changed on disk."""
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            if self._stamp is not None:
                self._checked.clear()
            self._stamp, self._contents = None, {"secrets": {}}
            return self._contents
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            contents = json.loads(unseal(self._key, self._path.read_bytes(), purpose=_PURPOSE))
            self._contents = contents
            self._stamp = stamp
            self._checked.clear()
        return self._contents

    async def _entry(self, path: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The contents and the entry of `path` (None: no such secret), once the version the
        file holds is known to be no older than any version seen before."""
        contents = self._load()
        entry = contents["secrets"].get(_check_path(path))
        await self._guard(path, entry["current"] if entry else 0)
        return contents, entry

    async def read(self, path: str) -> SecretVersion:
        contents, entry = await self._entry(path)
        if entry is None:
            raise SecretNotFound(f"no secret at {path!r} in the embedded store")
        current = int(entry["current"])
        data = self._open(contents, path, current, entry["versions"][str(current)])
        return SecretVersion(data=data, version=current)

    async def read_version(self, path: str, version: int) -> SecretVersion:
        contents, entry = await self._entry(path)
        kept = entry["versions"].get(str(version)) if entry else None
        if kept is None:
            raise SecretNotFound(f"no version {version} of {path!r} in the embedded store")
        return SecretVersion(data=self._open(contents, path, version, kept), version=version)

    async def versions(self, path: str) -> list[int]:
        _, entry = await self._entry(path)
        return sorted(int(v) for v in entry["versions"]) if entry else []

    def _open(
        self, contents: Mapping[str, Any], path: str, version: int, record: Mapping[str, Any]
    ) -> dict[str, str]:
        if contents.get("format", 1) == 1:
            return dict(record["data"])
        try:
            plaintext = unseal_record(self._key, record, bound_to=_binding(path, version))
        except SealError:
            self._refuse(
                "swapped",
                f"version {version} of {path!r} in the embedded store was not sealed for that "
                "path and version (moved or swapped): refused",
                code="secret_swapped",
            )
        data: dict[str, str] = json.loads(plaintext)
        return data

    # --- the watermark --------------------------------------------------------------------

    async def _guard(self, path: str, current: int) -> None:
        """Refuse `current` if an older version than one already seen; else remember it."""
        floor = self._floors.get(path, 0)
        if current < floor:
            self._refuse_rollback(path, current, floor)
        if self._watermark is None:
            self._floors[path] = current
            return
        if path in self._checked and current == floor:
            return  # already checked since the file last changed
        floor = max(floor, await self._watermark.remember_version(self._name, path, current))
        self._floors[path] = floor
        if current < floor:
            self._refuse_rollback(path, current, floor)
        self._checked.add(path)

    def _refuse_rollback(self, path: str, current: int, floor: int) -> NoReturn:
        found = f"version {current}" if current else "no secret"
        self._refuse(
            "rolled_back",
            f"the embedded store holds {found} at {path!r}, but version {floor} was seen "
            "before: the file was rolled back (a restored or copied-back file?); refused",
            once=(path, current, floor),
        )

    def _refuse(
        self,
        reason: str,
        message: str,
        *,
        code: str | None = None,
        once: tuple[str, int, int] | None = None,
    ) -> NoReturn:
        """Count every refusal; log one line for each new one (not one per vend)."""
        if self._on_refused is not None:
            self._on_refused(reason)
        if once is None or once not in self._logged:
            if once is not None:
                self._logged.add(once)
            log.error("%s (%s)", message, self._path)
        raise SecretRolledBack(message, code=code)

    # --- writing --------------------------------------------------------------------------

    async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
        _check_path(path)
        values = {str(k): str(v) for k, v in data.items()}
        async with self._lock:
            await self._entry(path)  # never write over a rolled-back file
            floor = self._floors.get(path, 0)
            version = await asyncio.to_thread(self._write_locked, path, values, cas, floor)
            self._floors[path] = max(version, self._floors.get(path, 0))
            if self._watermark is not None:
                # The file is written: a failure here only delays the mark to the next read.
                try:
                    await self._watermark.remember_version(self._name, path, version)
                except Exception as exc:  # the write itself succeeded
                    log.warning("could not record version %d of %r: %s", version, path, exc)
            return version

    def _write_locked(self, path: str, data: dict[str, str], cas: int | None, floor: int) -> int:
        lock_path = self._path.with_name(self._path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            # A copy: nothing may change what readers see until the new file is on disk. A
            # failed write must leave the old version current, in memory as on disk.
            contents = copy.deepcopy(self._load())
            entry = contents["secrets"].get(path)
            current = entry["current"] if entry else 0
            if current < floor:  # put back since the check, under another process's lock
                self._refuse_rollback(path, current, floor)
            if cas is not None and cas != current:
                raise CasMismatch(
                    f"check-and-set for {path!r} expected version {cas}, found {current}"
                )
            contents = self._upgraded(contents)
            entry = contents["secrets"].get(path)
            version = current + 1
            entry = entry or {"current": 0, "versions": {}}
            entry["versions"][str(version)] = {
                **seal_record(
                    self._key, json.dumps(data).encode(), bound_to=_binding(path, version)
                ),
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

    def _upgraded(self, contents: dict[str, Any]) -> dict[str, Any]:
        """Format-1 contents rewritten as format 2: every kept record sealed and bound."""
        if contents.get("format", 1) != 1:
            return contents
        secrets: dict[str, Any] = {}
        for path, entry in contents["secrets"].items():
            versions = {
                number: {
                    **seal_record(
                        self._key,
                        json.dumps(dict(record["data"])).encode(),
                        bound_to=_binding(path, int(number)),
                    ),
                    "created_time": record.get("created_time"),
                }
                for number, record in entry["versions"].items()
            }
            secrets[path] = {"current": entry["current"], "versions": versions}
        return {"format": _FORMAT, "secrets": secrets}

    async def check(self) -> None:
        self._load()

    async def close(self) -> None:
        if self._watermark is not None:
            await self._watermark.close()


def _binding(path: str, version: int) -> bytes:
    """What a record is bound to: its store's purpose, its path and its version."""
    return json.dumps(["credbroker-record", _PURPOSE, path, version]).encode()


def _check_path(path: str) -> str:
    if not path or path.startswith("/") or ".." in path.split("/"):
        raise InvalidRequest(f"invalid secret path {path!r}", code="invalid_secret_path")
    return path
