"""The daily compliance check: each control asked of the real systems, pass or fail with the
evidence. The controls (README "Compliance check", docs/audit.md):

- buckets_not_public: every space's bucket has no bucket policy statement or ACL grant for
  everyone, and an anonymous listing is refused (asked of the object store);
- read_only_cannot_write: the read-only fallback identity's keys, and a key it mints, are
  refused a PUT of a canary object by the object store;
- keys_fresh: every rotated key is younger than its schedule allows (plus grace) and its last
  rotation run did not fail (the rotation state store);
- ttl_within_policy: every grant of the day had a TTL within its client's and the store's
  maximum (the audit trail);
- write_used / clients_used: no client (of the config file, or an active principal of the
  state store) holds write it has not used, or any access it has not used, within
  `unused_days` (the UsageSource port: the lease table and the audit trail, the later wins);
- token_age: no usable token of a store principal is older than `token_max_age_days`; a
  config-file client's token has no date: listed as not checkable (a failure only with
  `require_dated_tokens`);
- transport_secure: TLS with verification toward Vault and the object store, or accepted;
- audit_chain: the chains of the last day verify;
- break_glass: the day's break-glass grants are listed (information; passes).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from credbroker.compliance.model import ComplianceResult, Control
from credbroker.compliance.trail import GRANTS, record_time, space_of
from credbroker.domain import (
    Access,
    Client,
    Principal,
    PrincipalSource,
    Role,
    SpaceTarget,
    TokenRecord,
    TtlLimits,
    utc_text,
)
from credbroker.errors import CredbrokerError
from credbroker.ports import (
    AuditSink,
    AuditTrail,
    BucketExposure,
    PrincipalStore,
    StateStore,
    UsageSource,
    WriteProbe,
)
from credbroker.rotation.schedule import Schedule

DAY = timedelta(days=1)
# A rotation may run this late (a scheduler resync, a retry) before its key counts as old.
KEY_AGE_SLACK = timedelta(hours=1)


@dataclass(frozen=True)
class RotationPolicy:
    name: str
    schedule: Schedule
    grace_seconds: float
    enabled: bool = True


class ComplianceCheck:
    def __init__(
        self,
        *,
        spaces: Mapping[str, SpaceTarget],
        clients: Sequence[Client],
        ttl: TtlLimits,
        clock_skew_seconds: float,
        exposure: BucketExposure,
        write_probe: WriteProbe | None,
        canary_name: str,
        state: StateStore | None,
        rotations: Sequence[RotationPolicy],
        trail: AuditTrail,
        usage: UsageSource,
        unused_days: int,
        principals: PrincipalStore | None = None,
        token_max_age_days: int = 90,
        require_dated_tokens: bool = False,
        insecure_transport: Sequence[str],
        accepted_insecure: Sequence[str],
        audit: AuditSink | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._spaces = spaces
        self._clients = clients
        self._ttl = ttl
        self._skew = timedelta(seconds=clock_skew_seconds)
        self._exposure = exposure
        self._probe = write_probe
        self._canary = canary_name
        self._state = state
        self._rotations = rotations
        self._trail = trail
        self._usage = usage
        self._unused = timedelta(days=unused_days)
        self._principals = principals
        self._token_max_age = timedelta(days=token_max_age_days)
        self._require_dated = require_dated_tokens
        self._insecure = insecure_transport
        self._accepted = accepted_insecure
        self._audit = audit
        self._clock = clock

    async def run(self) -> ComplianceResult:
        started = self._clock()
        since = started - DAY
        day = await self._trail.records(since, started)
        controls = [
            await self._guard("buckets_not_public", self._buckets),
            await self._guard("read_only_cannot_write", self._read_only),
            await self._guard("keys_fresh", self._keys),
            self._ttls(day),
            *await self._usage_controls(started),
            await self._guard("token_age", lambda: self._token_age(started)),
            self._transport(),
            await self._guard("audit_chain", lambda: self._chain(since)),
        ]
        # Every break-glass step's record says mode break-glass; a grant is a key handed out.
        grants = [r for r in day if r.get("mode") == "break-glass" and _is_grant(r)]
        controls.append(
            Control(
                "break_glass",
                True,
                f"{len(grants)} break-glass grant(s) in the last day",
                [_describe(r) for r in grants],
            )
        )
        hours, per_space = self._vends_per_hour(day, started)
        result = ComplianceResult(
            started_at=started,
            finished_at=self._clock(),
            controls=controls,
            vends_per_hour=per_space,
            hours=hours,
            break_glass=[dict(r) for r in grants],
        )
        if self._audit is not None:
            await self._audit.record(
                {
                    "ts": self._clock().isoformat(),
                    "event": "compliance",
                    "status": "pass" if result.passed else "fail",
                    "failed": result.failed(),
                    "controls": {c.name: "pass" if c.passed else "fail" for c in controls},
                }
            )
        return result

    async def _guard(self, name: str, control: Callable[[], Any]) -> Control:
        """A control whose system cannot be asked fails, with the reason as evidence."""
        try:
            result: Control = await control()
        except CredbrokerError as exc:
            return Control(name, False, "could not be checked", [f"{exc.code}: {exc.message}"])
        return result

    async def _buckets(self) -> Control:
        evidence: list[str] = []
        failing: list[str] = []
        for bucket in sorted({s.bucket for s in self._spaces.values()}):
            findings, asked = await self._exposure.public_findings(bucket)
            evidence += [f"{bucket}: {line}" for line in asked]
            evidence += [f"{bucket}: PUBLIC: {line}" for line in findings]
            if findings:
                failing.append(bucket)
        if failing:
            return Control("buckets_not_public", False, f"public: {', '.join(failing)}", evidence)
        return Control("buckets_not_public", True, "no space's bucket is public", evidence)

    async def _read_only(self) -> Control:
        if self._probe is None:
            return Control(
                "read_only_cannot_write", True, "no read-only fallback identity is configured"
            )
        _, target = min(self._spaces.items())
        key = f"{target.prefix}{self._canary}/{uuid.uuid4().hex}"
        refused, evidence = await self._probe.write_refused(target.bucket, key)
        summary = (
            "the object store refused every write by the read-only identity"
            if refused
            else "the read-only identity WROTE an object"
        )
        return Control("read_only_cannot_write", refused, summary, evidence)

    async def _keys(self) -> Control:
        if not self._rotations:
            return Control("keys_fresh", True, "no rotated keys are configured")
        if self._state is None:
            return Control("keys_fresh", False, "no rotation state store")
        now = self._clock()
        evidence: list[str] = []
        failing: list[str] = []
        for policy in self._rotations:
            record = await self._state.load(policy.name)
            since = record.current_key_since if record else None
            if record is None or since is None:
                failing.append(policy.name)
                evidence.append(f"{policy.name}: no rotation record: key age unknown")
                continue
            due = policy.schedule.next_after(since)
            limit = due + timedelta(seconds=policy.grace_seconds) + KEY_AGE_SLACK
            age = now - since
            line = (
                f"{policy.name}: key {record.current_key_id} in service since "
                f"{utc_text(since)} ({age.days} d {age.seconds // 3600} h), rotation due "
                f"{utc_text(due)} ({policy.schedule.describe()}); last success "
                f"{utc_text(record.last_success_at) or 'never'}; last error "
                f"{record.last_error or '-'} (attempts {record.attempts})"
            )
            bad = []
            if now > limit:
                bad.append("older than its rotation period")
            if record.last_error is not None or record.attempts > 0:
                bad.append("the last rotation failed")
            if bad:
                failing.append(policy.name)
                line += ": " + " and ".join(bad).upper()
            evidence.append(line)
        if failing:
            return Control("keys_fresh", False, f"failing: {', '.join(failing)}", evidence)
        return Control("keys_fresh", True, "every key is within its period", evidence)

    def _ttls(self, day: list[Mapping[str, Any]]) -> Control:
        clients = {c.id: c for c in self._clients}
        evidence: list[str] = []
        grants = [r for r in day if r.get("event") in GRANTS]
        for record in grants:
            ttl = record.get("ttl_seconds")
            client = clients.get(str(record.get("client")))
            ceiling = self._ttl.max_seconds
            if client is not None:
                ceiling = min(ceiling, client.max_ttl_seconds)
            problems = []
            if not isinstance(ttl, int) or ttl > ceiling:
                problems.append(f"ttl {ttl} s over the maximum {ceiling} s")
            issued, expires = record_time(record), _time(record.get("expires"))
            if (
                isinstance(ttl, int)
                and issued is not None
                and expires is not None
                and expires - issued > timedelta(seconds=ttl) + self._skew
            ):
                problems.append(f"expires {record.get('expires')}, past its ttl")
            if problems:
                evidence.append(f"{_describe(record)}: {'; '.join(problems)}")
        if evidence:
            return Control("ttl_within_policy", False, f"{len(evidence)} grant(s) over", evidence)
        return Control(
            "ttl_within_policy", True, f"{len(grants)} grant(s) in the last day, all within"
        )

    async def _store_principals(self) -> list[Principal]:
        """The state store's active principals that the config file does not define (a config
        client wins over a store principal of the same id, as in control.py)."""
        if self._principals is None:
            return []
        configured = {c.id for c in self._clients}
        return [
            p
            for p in await self._principals.principals()
            if p.active and p.source is PrincipalSource.STORE and p.id not in configured
        ]

    async def _tokens_of(self, client_id: str) -> list[TokenRecord]:
        return [] if self._principals is None else await self._principals.tokens(client_id)

    async def _token_age(self, now: datetime) -> Control:
        limit = self._token_max_age
        evidence: list[str] = []
        failing: list[str] = []
        undated: list[str] = []
        for client in sorted(self._clients, key=lambda c: c.id):
            undated.append(client.id)
            line = f"{client.id}: not checkable: config-file token (no creation date)"
            evidence.append(line.upper() if self._require_dated else line)
        if self._require_dated:
            failing += undated
        for principal in await self._store_principals():
            for token in await self._tokens_of(principal.id):
                if not token.usable(now):
                    continue
                age = now - token.created_at
                line = (
                    f"{principal.id}: token {token.id} created {utc_text(token.created_at)} "
                    f"({age.days} d {age.seconds // 3600} h old), expires "
                    f"{utc_text(token.expires_at) or 'never'}"
                )
                if age > limit:
                    failing.append(f"{principal.id}/{token.id}")
                    line += f": OLDER THAN THE MAXIMUM OF {limit.days} DAYS"
                evidence.append(line)
        days = limit.days
        if failing:
            return Control(
                "token_age",
                False,
                f"{len(failing)} token(s) older than {days} days or undated: {', '.join(failing)}"
                if self._require_dated
                else f"{len(failing)} token(s) older than {days} days: {', '.join(failing)}",
                evidence,
            )
        summary = f"every dated usable token is younger than {days} days"
        if undated:
            summary += f"; {len(undated)} config-file token(s) not checkable (no date)"
        return Control("token_age", True, summary, evidence)

    async def _usage_controls(self, now: datetime) -> list[Control]:
        try:
            store_clients = [p.client for p in await self._store_principals()]
            clients = [*self._clients, *store_clients]
            rules = [c for c in clients if Role.RULE in c.roles]
            used = await self._usage.last_use(now - self._unused, now, [c.id for c in rules])
        except CredbrokerError as exc:
            failed = [f"{exc.code}: {exc.message}"]
            return [
                Control("write_used", False, "could not be checked", failed),
                Control("clients_used", False, "could not be checked", failed),
            ]
        days = self._unused.days
        idle: list[str] = []
        idle_write: list[str] = []
        seen: list[str] = []
        seen_write: list[str] = []
        for client in rules:
            any_use, write_use = used.get(client.id, (None, None))
            (seen if any_use else idle).append(f"{client.id}: last grant {utc_text(any_use)}")
            if client.max_access is Access.WRITE:
                target = seen_write if write_use else idle_write
                target.append(f"{client.id}: last write grant {utc_text(write_use)}")
        return [
            Control(
                "write_used",
                not idle_write,
                f"{len(idle_write)} client(s) hold write unused for {days} days"
                if idle_write
                else f"every write client wrote within {days} days",
                [f"UNUSED: {x}" for x in idle_write] + seen_write,
            ),
            Control(
                "clients_used",
                not idle,
                f"{len(idle)} client(s) unused for {days} days"
                if idle
                else f"every client was used within {days} days",
                [f"UNUSED: {x}" for x in idle] + seen,
            ),
        ]

    def _transport(self) -> Control:
        accepted = [t for t in self._insecure if t.split(" ")[0] in self._accepted]
        refused = [t for t in self._insecure if t not in accepted]
        evidence = [f"INSECURE: {t}" for t in refused] + [
            f"accepted (compliance.accept_insecure_transport): {t}" for t in accepted
        ]
        if refused:
            return Control("transport_secure", False, f"{len(refused)} insecure", evidence)
        return Control(
            "transport_secure",
            True,
            "TLS with verification toward Vault and the object store (or loopback)",
            evidence,
        )

    async def _chain(self, since: datetime) -> Control:
        ok, problem, chains = await self._trail.verify(since)
        evidence = [
            f"{c['chain']}: {c['status']}, seq {c['first_seq']}..{c['last_seq']}, "
            f"{c['checkpoints']} checkpoint(s)"
            for c in chains
        ]
        if problem:
            evidence.insert(0, f"FIRST PROBLEM: {problem}")
        return Control(
            "audit_chain",
            ok,
            f"{len(chains)} chain(s) verify" if ok else "the audit chain does not verify",
            evidence,
        )

    def _vends_per_hour(
        self, day: list[Mapping[str, Any]], now: datetime
    ) -> tuple[list[str], dict[str, list[int]]]:
        first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
        hours = [(first + timedelta(hours=h)).strftime("%Y-%m-%dT%H") for h in range(24)]
        counts = {key: [0] * 24 for key in sorted(self._spaces)}
        for record in day:
            moment = record_time(record)
            if record.get("event") not in GRANTS or moment is None:
                continue
            slot = int((moment - first).total_seconds() // 3600)
            space = space_of(self._spaces, record)
            if space in counts and 0 <= slot < 24:
                counts[space][slot] += 1
        return hours, counts


def _time(value: object) -> datetime | None:
    return record_time({"ts": value}) if isinstance(value, str) else None


def _describe(record: Mapping[str, Any]) -> str:
    fields = ("ts", "event", "client", "bucket", "prefix", "access", "ttl_seconds", "lease_id")
    return " ".join(f"{k}={record.get(k)}" for k in fields if record.get(k) is not None)


def _is_grant(record: Mapping[str, Any]) -> bool:
    """A key handed out: a vend or presign, or a break-glass request's successful collect
    (its request, approval, share and close records are steps, not grants)."""
    if record.get("event") != "break_glass":
        return True
    return record.get("step") == "collect" and record.get("outcome") == "ok"
