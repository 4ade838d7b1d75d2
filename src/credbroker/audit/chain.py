"""The tamper-evident audit chain: sequence numbers, hash links and signed checkpoints.

Every record a process writes carries `chain` (the writer: host, pid and start time), `seq`
(1, 2, ... within the chain) and `prev` (SHA-256 of the previous line of the same chain, as
written; 64 zeros for seq 1). Now and then (`audit.checkpoint_seconds`) and when the process
stops, the writer appends a `checkpoint` record: itself a link of the chain, signed with
Ed25519 over its own canonical JSON (so over the chain id, its seq and the hash of the record
before it). The shutdown checkpoint has `"final": true`: the chain is closed.

What the verifier (`verify_lines`) detects, and what it cannot:
- an edited, deleted, inserted or reordered record before the last checkpoint: always (a hash
  link breaks, a seq is skipped or repeated, and a rewritten link cannot be re-signed);
- a forged or altered checkpoint: its signature fails (key pinned by the verifier);
- records cut off after the last checkpoint of a chain that was closed: the final checkpoint is
  gone, so the chain is "unclosed"; a writer that is still running appends its next record
  (and checkpoint) to a chain whose link no longer matches, so a cut is seen then;
- records after the last checkpoint of a live writer can be rewritten consistently (hash links
  recomputed) until its next checkpoint: the verifier reports how many records are not yet
  sealed ("open"); a dead writer's chain without a final checkpoint is an error ("unclosed");
- a whole chain removed (every line of one process) is not visible from the other chains:
  ship records off the host (syslog sink) to cover that.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from credbroker.errors import AuditUnavailable, ConfigError

log = logging.getLogger("credbroker.audit")

GENESIS = "0" * 64
CHAIN_FIELDS = ("chain", "seq", "prev")


class LineSink(Protocol):
    """Where chained lines go: a file, standard output, syslog."""

    name: str

    async def write(self, line: bytes) -> None:
        """Write one line (no newline). Raise on failure: the record is then refused."""
        ...

    async def close(self) -> None: ...


class AuditFailureCounter(Protocol):
    def count_audit_failure(self, sink: str) -> None: ...


def canonical(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), default=str, sort_keys=True).encode()


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def new_chain_id(clock: Callable[[], float] = time.time) -> str:
    """host:pid:start-ms-random: unique even for two sinks a process opens in one ms."""
    return f"{socket.gethostname()}:{os.getpid()}:{int(clock() * 1000)}-{secrets.token_hex(3)}"


# --- keys ---------------------------------------------------------------------------------------


def generate_private_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(data: bytes) -> Ed25519PrivateKey:
    """A PEM (PKCS#8) Ed25519 key, or its 32 raw bytes in base64."""
    try:
        if b"BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(
                base64.b64decode(data.strip(), validate=True)
            )
    except (ValueError, TypeError):
        raise ConfigError("the audit signing key is not an Ed25519 key (PEM or base64)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("the audit signing key is not an Ed25519 key")
    return key


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(data: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ConfigError("the audit public key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("the audit public key is not an Ed25519 key")
    return key


# --- the writer -----------------------------------------------------------------------------------


class ChainedAudit:
    """An AuditSink that links every record into this process's chain and writes it to every
    sink. Fail closed: a sink that fails refuses the record (AuditUnavailable), the chain does
    not advance, the failure is logged and counted."""

    def __init__(
        self,
        sinks: list[LineSink],
        *,
        signer: Ed25519PrivateKey | Callable[[], Awaitable[Ed25519PrivateKey]] | None,
        checkpoint_seconds: float | None,
        publish: Callable[[Ed25519PublicKey], None] | None = None,
        metrics: AuditFailureCounter | None = None,
        chain_id: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        chained: bool = True,
    ) -> None:
        self._sinks = sinks
        self._signer: Ed25519PrivateKey | None = None
        self._load_signer: Callable[[], Awaitable[Ed25519PrivateKey]] | None = None
        self._publish = publish
        self._key_id: str | None = None
        if isinstance(signer, Ed25519PrivateKey):
            self._use(signer)
        elif signer is not None:
            self._load_signer = signer
        self._interval = checkpoint_seconds
        self._metrics = metrics
        self.chain_id = chain_id or new_chain_id()
        self._clock = clock
        self._chained = chained
        self._seq = 0
        self._prev = GENESIS
        self._since_checkpoint = 0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def seq(self) -> int:
        return self._seq

    async def record(self, event: Mapping[str, Any]) -> None:
        async with self._lock:
            await self._append(dict(event))
        signing = self._signer is not None or self._load_signer is not None
        if self._interval and self._task is None and signing and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._every(self._interval), name="credbroker-audit-checkpoint"
            )

    async def checkpoint(self, *, final: bool = False) -> None:
        """Append a signed checkpoint (nothing without a signing key)."""
        if self._signer is None and self._load_signer is not None:
            try:
                self._use(await self._load_signer())
            except Exception as exc:
                if self._metrics is not None:
                    self._metrics.count_audit_failure("signing-key")
                log.error("audit signing key unavailable (%s): no checkpoint", type(exc).__name__)
                return
        if self._signer is None:
            return
        async with self._lock:
            if not final and self._since_checkpoint == 0:
                return  # nothing new to seal
            body = {
                "ts": self._clock().isoformat(),
                "event": "checkpoint",
                "key_id": self._key_id,
                "final": final,
            }
            await self._append(body, sign=True)

    def _use(self, signer: Ed25519PrivateKey) -> None:
        self._signer, self._key_id = signer, key_id(signer.public_key())
        if self._publish is not None:
            self._publish(signer.public_key())

    async def _append(self, record: dict[str, Any], *, sign: bool = False) -> None:
        if self._chained:
            record["chain"], record["seq"], record["prev"] = (
                self.chain_id,
                self._seq + 1,
                self._prev,
            )
        if sign:
            assert self._signer is not None
            record.pop("sig", None)
            record["sig"] = base64.b64encode(self._signer.sign(canonical(record))).decode()
        line = canonical(record)
        for sink in self._sinks:
            try:
                await sink.write(line)
            except Exception as exc:
                if self._metrics is not None:
                    self._metrics.count_audit_failure(sink.name)
                log.error(
                    "audit sink %s failed (%s): the record is refused, and with it the request",
                    sink.name,
                    type(exc).__name__,
                )
                raise AuditUnavailable(
                    "the audit record could not be written; nothing was handed out"
                ) from None
        if self._chained:
            self._seq += 1
            self._prev = line_hash(line)
        self._since_checkpoint = 0 if sign else self._since_checkpoint + 1

    async def _every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            with contextlib.suppress(AuditUnavailable):  # logged and counted; tried again
                await self.checkpoint()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            if self._seq:
                await self.checkpoint(final=True)
        except AuditUnavailable:
            pass
        finally:
            for sink in self._sinks:
                await sink.close()


# --- the verifier ---------------------------------------------------------------------------------

_SYSLOG = re.compile(rb"^(?:\d+ )?<\d{1,3}>1 \S+ \S+ \S+ \S+ \S+ (?:-|(?:\[.*?\])+) (\{.*)$")


@dataclass
class ChainReport:
    chain: str
    first_seq: int = 0
    last_seq: int = 0
    records: int = 0
    checkpoints: int = 0
    sealed_seq: int = 0  # the seq of the last valid checkpoint
    closed: bool = False
    live: bool = False
    error: str | None = None
    where: str | None = None  # FILE:LINE of the first bad record
    _prev: str = field(default=GENESIS, repr=False)

    @property
    def unsealed(self) -> int:
        return self.last_seq - self.sealed_seq

    @property
    def status(self) -> str:
        if self.error:
            return "bad"
        if self.closed:
            return "closed"
        return "open" if self.live else "unclosed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "status": self.status,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "sealed_seq": self.sealed_seq,
            "unsealed": self.unsealed,
            "error": self.error,
            "where": self.where,
        }


@dataclass
class VerifyReport:
    chains: dict[str, ChainReport]
    unchained: int = 0  # lines with no chain fields (written before the chain existed)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and all(c.status in ("closed", "open") for c in self.chains.values())

    def first_problem(self) -> str | None:
        if self.errors:
            return self.errors[0]
        for chain in self.chains.values():
            if chain.error:
                return f"{chain.where}: chain {chain.chain}: {chain.error}"
            if chain.status == "unclosed":
                return (
                    f"chain {chain.chain}: unclosed: no final checkpoint and its writer is not "
                    f"running; {chain.unsealed} record(s) after seq {chain.sealed_seq} are not "
                    "sealed (cut off, or the writer crashed)"
                )
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "first_problem": self.first_problem(),
            "unchained": self.unchained,
            "chains": [c.as_dict() for c in self.chains.values()],
        }


def writer_alive(chain: str) -> bool:
    """The chain's writer is a process running on this host now (same pid, started then)."""
    host, _, rest = chain.partition(":")
    pid_text, _, _started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def record_of(line: bytes) -> dict[str, Any] | None:
    """The JSON record of a line: a JSON line, or an RFC 5424 syslog line carrying one."""
    line = line.rstrip(b"\r\n")
    if not line.strip():
        return None
    if not line.startswith(b"{"):
        match = _SYSLOG.match(line)
        if match is None:
            raise ValueError("neither a JSON record nor an RFC 5424 line carrying one")
        line = match.group(1)
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def verify_lines(
    lines: Iterable[tuple[str, bytes]],
    public_key: Ed25519PublicKey | None,
    *,
    alive: Callable[[str], bool] = writer_alive,
) -> VerifyReport:
    """Check every chain in `lines` ((where, line) in file order, oldest file first).

    A chain may start past seq 1 (older files rotated away and not given): its first record's
    link is then taken as given, unless the chain id says it started after the first record
    given (then its first records were deleted). Without a public key, signatures cannot be
    checked, and every checkpoint is an error."""
    report = VerifyReport(chains={})
    wanted_key = key_id(public_key) if public_key is not None else None
    earliest: float | None = None  # the first record's time: chains started later start here
    for where, raw in lines:
        try:
            record = record_of(raw)
        except ValueError as exc:
            report.errors.append(f"{where}: unreadable line ({exc})")
            continue
        if record is None:
            continue
        moment = record.get("ts")
        if earliest is None and isinstance(moment, str):
            with contextlib.suppress(ValueError):
                earliest = datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()
        chain_id, seq, prev = record.get("chain"), record.get("seq"), record.get("prev")
        if chain_id is None and seq is None and prev is None:
            report.unchained += 1
            continue
        if not isinstance(chain_id, str) or not isinstance(seq, int) or not isinstance(prev, str):
            report.errors.append(f"{where}: malformed chain fields")
            continue
        chain = report.chains.setdefault(chain_id, ChainReport(chain_id))
        if chain.error:
            continue
        body = canonical(record)
        problem = _link_problem(chain, seq, prev, record)
        if problem is None and record.get("event") == "checkpoint":
            problem = _signature_problem(record, public_key, wanted_key)
            if problem is None:
                chain.checkpoints += 1
                chain.sealed_seq = seq
                chain.closed = bool(record.get("final"))
        if problem is not None:
            chain.error, chain.where = problem, where
            continue
        if chain.records == 0:
            chain.first_seq = seq
        chain.records += 1
        chain.last_seq = seq
        chain._prev = line_hash(body)
        if body != raw.rstrip(b"\r\n") and raw.startswith(b"{"):
            chain.error, chain.where = "the line is not in canonical form (edited)", where
    for chain in report.chains.values():
        chain.live = not chain.closed and alive(chain.chain)
        started = _chain_start(chain.chain)
        if (
            chain.error is None
            and chain.first_seq > 1
            and earliest is not None
            and started is not None
            and started >= earliest
        ):
            # The chain began after the first record given, so its start must be here.
            chain.error = (
                f"seq 1..{chain.first_seq - 1} missing: the chain started at "
                f"{datetime.fromtimestamp(started, UTC).isoformat()}, after the first record "
                "given (deleted)"
            )
            chain.where = "(the chain's start)"
    return report


def _chain_start(chain: str) -> float | None:
    """The start time written into a chain id (host:pid:start-ms-random), in seconds."""
    text = chain.rsplit(":", 1)[-1].split("-", 1)[0]
    return int(text) / 1000 if text.isdigit() else None


def _link_problem(chain: ChainReport, seq: int, prev: str, record: Mapping[str, Any]) -> str | None:
    if chain.closed:
        return f"seq {seq} after the chain's final checkpoint (appended or inserted)"
    if chain.records == 0:
        if seq == 1 and prev != GENESIS:
            return "seq 1 does not start from the genesis link"
        return None
    expected = chain.last_seq + 1
    if seq != expected:
        kind = "missing (deleted or cut)" if seq > expected else "repeated or out of order"
        return f"seq {seq} where {expected} was due: record(s) {kind}"
    if prev != chain._prev:
        return (
            f"seq {seq}: its link does not match the hash of seq {chain.last_seq} "
            f"(seq {chain.last_seq} was edited, or a record was replaced)"
        )
    return None


def _signature_problem(
    record: Mapping[str, Any], public_key: Ed25519PublicKey | None, wanted_key: str | None
) -> str | None:
    seq = record.get("seq")
    if public_key is None:
        return f"checkpoint seq {seq}: no public key given to check its signature"
    if record.get("key_id") != wanted_key:
        return f"checkpoint seq {seq}: signed by key {record.get('key_id')}, not {wanted_key}"
    unsigned = {k: v for k, v in record.items() if k != "sig"}
    try:
        signature = base64.b64decode(str(record.get("sig", "")), validate=True)
        public_key.verify(signature, canonical(unsigned))
    except (InvalidSignature, ValueError):
        return f"checkpoint seq {seq}: bad signature (forged or altered)"
    return None


def read_files(paths: Iterable[Path]) -> Iterable[tuple[str, bytes]]:
    for path in paths:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                yield f"{path}:{number}", line


def rotated_files(path: Path) -> list[Path]:
    """The audit file and its rotated siblings (logrotate's NAME.1, NAME.2.gz is not read,
    NAME-DATE), oldest first by modification time, the live file last."""
    siblings = [
        p
        for p in path.parent.glob(path.name + "*")
        if p != path and not p.name.endswith((".gz", ".pub", ".xz", ".zst"))
    ]
    ordered = sorted(siblings, key=lambda p: p.stat().st_mtime)
    return [*ordered, path] if path.exists() else ordered
