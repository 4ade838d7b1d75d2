"""Rotate a managed credential's object-store key, top to bottom. No downtime, no lost key.

    lock     one rotation per credential at a time (a file lock, or a PostgreSQL advisory
             lock across replicas); a held lock skips the run, it never waits
    look     read the record and the secret store; repair an interrupted run (below)
    clean    delete every key of the user that the store does not hold (orphans)
    create   ask the object store for a new key                    creating -> created
    verify   a real signed call with it, retried with backoff      -> verified
             (a new key can take seconds to become valid)
    store    write it as a new version, check-and-set on the version read at the start;
             the broker switches at once (its cached key is dropped)  -> stored
    grace    until stored_at + grace the old key keeps working (other replicas, caches)
    delete   delete every key of the user the store no longer holds -> old_deleted
    prove    a signed call with the old key is refused, with backoff -> done

Each phase is recorded (key ids, never a secret) before the next step starts, so the next run
knows where a killed one stopped and repairs it:

    creating          a key may exist whose id never reached the record: clean (keep only the
                      store's key), then start over
    created/verified  the new secret lived only in the dead process: if the store holds the new
                      key, the write happened (-> stored, the grace restarts now); otherwise the
                      new key is an orphan and is deleted
    stored            the grace goes on; old_deleted: delete again (idempotent), then prove

A forced run ("rotate now": `credbroker rotate --now`, POST /v1/admin/rotations/{name}) means a
new key, made by this run. A rotation left in progress (stored or old_deleted, after a failed
deletion, a crash, or a repair above) is finished first: its old key is deleted and proven
refused (a user holds at most two keys), then the forced run rotates, every phase recorded as
above. It never ends a grace early on its own (other replicas and caches may still use that
key): while the grace runs it answers grace_not_over and touches no key, unless the operator
asked to end the grace now (`end_grace`, for a leaked key: runbooks/06-rotation.md) or to wait
for it (`wait`). A forced run answers completed or waiting_grace only once its own key is
stored; one that cannot finish the rotation in progress fails, naming why, with nothing new
stored, and its retry (scheduled, not forced) finishes that rotation without rotating again.

A pair driver (MinIO `minio-users`: two built-in users used in turn, MinioUserPairDriver)
has fixed keys: create gives the user the store does not hold a fresh secret, and "delete" gives
a user a random secret nobody keeps. The phases above hold unchanged: clean and delete scramble
the user the store does not hold (so an interrupted create's secret, which only the dead process
knew, dies too), and prove signs with the old secret, which must be refused.

The store's current key is never deleted, and nothing is deleted unless that key is one of the
user's keys (a wrong `user` in the config would otherwise delete someone else's keys). A failed
run leaves the old key in service, is logged and counted, and is retried with exponential
backoff; the due time lives in the state store, so a restart neither skips nor repeats a run.
A store the broker cannot write (`writable` False: CyberArk CCP) is never rotated: its owner
rotates, and the broker only notices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from credbroker.domain import (
    AccessKey,
    RotationPhase,
    RotationRecord,
    SecretVersion,
)
from credbroker.errors import (
    CasMismatch,
    CredbrokerError,
    InvalidRequest,
    ObjectStoreRejected,
    ObjectStoreUnavailable,
    RotationBusy,
    RotationFailed,
    SecretNotFound,
)
from credbroker.ports import (
    AuditSink,
    KeyDriver,
    KeyProbe,
    RotationMetrics,
    SecretStore,
    StateStore,
)
from credbroker.rotation.model import (
    Checkpoint,
    ManagedKey,
    ManagedKeyStatus,
    Outcome,
    RetryPolicy,
    RunResult,
)
from credbroker.rotation.status import managed_key_status

log = logging.getLogger("credbroker.rotation")

Phase = RotationPhase


class _StillAccepted(Exception):
    """The old key still works (deletion not visible yet): retried with backoff."""


@dataclass
class _Progress:
    """What one run has done so far, for its Outcome (a failed one included)."""

    stored_key_id: str | None = None
    retired_key_id: str | None = None

    def outcome(self, record: RotationRecord, result: RunResult) -> Outcome:
        return Outcome(record, result, self.stored_key_id, self.retired_key_id)


class Rotator:
    def __init__(
        self,
        *,
        credentials: Sequence[ManagedKey],
        drivers: Mapping[str, KeyDriver],
        store: SecretStore,
        state: StateStore,
        probe: KeyProbe,
        metrics: RotationMetrics,
        audit: AuditSink | None = None,
        retry: RetryPolicy = RetryPolicy(),
        verify_timeout_seconds: float = 120.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_switch: Callable[[str], Awaitable[None]] | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.credentials = {c.name: c for c in credentials}
        self._drivers = drivers
        self._store = store
        self._state = state
        self._probe = probe
        self._metrics = metrics
        self._audit = audit
        self._retry = retry
        self._verify_timeout = verify_timeout_seconds
        self._clock = clock
        self._sleep = sleep
        self._on_switch = on_switch
        self._checkpoint = checkpoint
        self._latest: dict[str, RotationRecord] = {}  # the last record saved, per credential
        self._key_since: dict[str, datetime | None] = {}  # for the key-age gauge
        self._listeners: list[Callable[[RotationRecord], None]] = []
        for name in self.credentials:
            metrics.watch_key_age(name, self._age_of(name))

    @property
    def writable(self) -> bool:
        return self._store.writable

    # --- entry points -----------------------------------------------------------------------

    async def run(
        self, name: str, *, force: bool = False, wait: bool = False, end_grace: bool = False
    ) -> Outcome:
        """One run for `name`: repair, then rotate if due (or `force`: a new key, see the
        module's docstring), as far as the grace allows (`wait` sleeps through it; `end_grace`
        ends the grace of the rotation already in progress now, never the new one's).
        Failures are recorded, never raised; RotationBusy is raised when another run holds
        the lock."""
        spec = self.credential(name)
        try:
            async with self._state.lock(name):
                outcome = await self._locked_run(spec, force=force, wait=wait, end_grace=end_grace)
        except RotationBusy:
            self._metrics.count_run(name, RunResult.BUSY)
            raise
        self._metrics.count_run(name, outcome.result)
        for listener in self._listeners:
            listener(outcome.record)
        return outcome

    def subscribe(self, listener: Callable[[RotationRecord], None]) -> None:
        """Call `listener` with the record each run ends with (the scheduler re-times its job
        when a run was started elsewhere in this process, e.g. by the admin API)."""
        self._listeners.append(listener)

    async def enroll(self, name: str) -> RotationRecord:
        """The record of `name`, created (or re-timed after a schedule change) if needed.

        Used by the scheduler on start and resync. Takes the lock only to write; if a run
        holds it, the record as stored is returned.
        """
        spec = self.credential(name)
        try:
            async with self._state.lock(name):
                return await self._enrolled(spec)
        except RotationBusy:
            return await self._state.load(name) or RotationRecord(name)

    async def status(self) -> list[ManagedKeyStatus]:
        """Every managed credential as the state store, the secret store and the object store
        see it right now. A source that cannot answer is named in `problems`."""
        statuses = []
        for spec in self.credentials.values():
            record = await self._state.load(spec.name) or RotationRecord(spec.name)
            status = await managed_key_status(
                spec, record, store=self._store, driver=self._drivers[spec.name], now=self._clock()
            )
            if status.key_age_seconds is not None and record.current_key_since is not None:
                self._key_since.setdefault(spec.name, record.current_key_since)
            statuses.append(status)
        return statuses

    def observe(self, record: RotationRecord) -> None:
        """Set the rotation gauges from a stored record (the scheduler's resync, in every
        process): a rotation done by the CLI, cron or another replica shows here too, and a
        failure streak another run ended is cleared."""
        if record.last_success_at is not None:
            self._metrics.rotation_succeeded(record.credential, record.last_success_at)
        self._metrics.set_consecutive_failures(record.credential, record.attempts)
        self._metrics.set_next_due(record.credential, record.next_due_at)
        self._key_since[record.credential] = record.current_key_since

    async def record(self, name: str) -> RotationRecord:
        """The record as stored (read without the lock, as any observer may)."""
        self.credential(name)
        return await self._state.load(name) or RotationRecord(name)

    def credential(self, name: str) -> ManagedKey:
        spec = self.credentials.get(name)
        if spec is None:
            raise InvalidRequest(f"no managed credential named {name!r}", code="unknown_credential")
        return spec

    # --- one locked run ---------------------------------------------------------------------

    async def _locked_run(
        self, spec: ManagedKey, *, force: bool, wait: bool, end_grace: bool
    ) -> Outcome:
        record = await self._enrolled(spec)
        if not self._store.writable:
            secret = await self._store.read(spec.secret_path)
            record = await self._noticed(record, AccessKey.from_secret(secret))
            return Outcome(record, RunResult.READ_ONLY)
        if not (spec.enabled or force or record.phase.in_progress):
            return Outcome(record, RunResult.DISABLED)
        # `wait` and `end_grace` finish a rotation in progress now.
        finish_now = (wait or end_grace) and record.phase.in_progress
        if not (force or self._due(record) or finish_now):
            return Outcome(record, RunResult.NOT_DUE)
        progress = _Progress()
        try:
            return await self._advance(
                spec, record, progress, force=force, wait=wait, end_grace=end_grace
            )
        except Exception as exc:  # every failure is recorded, logged, counted and retried
            return progress.outcome(await self._failed(spec, exc), RunResult.FAILED)

    async def _advance(
        self,
        spec: ManagedKey,
        record: RotationRecord,
        progress: _Progress,
        *,
        force: bool,
        wait: bool,
        end_grace: bool,
    ) -> Outcome:
        secret = await self._store.read(spec.secret_path)
        record = await self._noticed(record, AccessKey.from_secret(secret))
        record = await self._repair(spec, record, secret)
        if record.phase.in_progress:  # stored or old_deleted: an old key still to retire
            record = await self._finish(spec, record, wait=wait, end_grace=end_grace)
            if record.phase is not Phase.DONE:  # its old key lives out its grace
                if force:
                    log.warning(
                        "rotation %s: not rotated: old key %s is in its grace until %s; no key "
                        "touched (end the grace now, or wait for it, to rotate)",
                        spec.name,
                        record.old_key_id,
                        record.next_due_at,
                    )
                    return progress.outcome(record, RunResult.GRACE_NOT_OVER)
                return progress.outcome(record, RunResult.WAITING_GRACE)
            if not force:
                return progress.outcome(record, RunResult.COMPLETED)
            progress.retired_key_id = record.old_key_id
            log.info(
                "rotation %s: the rotation in progress is finished (old key %s refused); "
                "rotating now, as forced",
                spec.name,
                record.old_key_id,
            )
            secret = await self._store.read(spec.secret_path)  # the version to replace (cas)
            record = await self._noticed(record, AccessKey.from_secret(secret))
        elif not (force or self._due(record)):
            return progress.outcome(record, RunResult.NOT_DUE)  # the repair was all to do
        record = await self._create_verify_store(spec, record, secret)
        progress.stored_key_id = record.new_key_id
        record = await self._finish(spec, record, wait=wait, end_grace=False)
        done = record.phase is Phase.DONE
        return progress.outcome(record, RunResult.COMPLETED if done else RunResult.WAITING_GRACE)

    async def _finish(
        self, spec: ManagedKey, record: RotationRecord, *, wait: bool, end_grace: bool
    ) -> RotationRecord:
        """Retire the old key of the rotation in progress once its grace is over (`wait`
        sleeps out the rest, `end_grace` ends it now): delete it, prove it is refused."""
        if record.phase is Phase.STORED:
            assert record.stored_at is not None
            grace_ends = record.stored_at + timedelta(seconds=spec.grace_seconds)
            remaining = (grace_ends - self._clock()).total_seconds()
            if remaining > 0 and end_grace:
                log.warning(
                    "rotation %s: ending the grace of old key %s %.1f s early, as asked",
                    spec.name,
                    record.old_key_id,
                    remaining,
                )
                await self._record_event(
                    spec.name, "grace_ended", old_key_id=record.old_key_id, seconds_left=remaining
                )
            elif remaining > 0 and not wait:
                if record.next_due_at != grace_ends:  # a failed run's backoff: not before then
                    record = await self._save(replace(record, next_due_at=grace_ends))
                return record  # next_due_at is the grace's end: the scheduler comes back then
            elif remaining > 0:
                log.info("rotation %s: waiting %.1f s of grace", spec.name, remaining)
                await self._sleep(remaining)
            record = await self._delete_old(spec, record)
        if record.phase is Phase.OLD_DELETED:
            record = await self._prove_old_refused(spec, record)
        return record

    # --- repair -----------------------------------------------------------------------------

    async def _repair(
        self, spec: ManagedKey, record: RotationRecord, secret: SecretVersion
    ) -> RotationRecord:
        in_store = AccessKey.from_secret(secret).access_key_id
        if record.phase is Phase.CREATING:
            log.warning("rotation %s: a run died while creating a key; cleaning up", spec.name)
            await self._delete_strays(spec, keep=in_store)
            return await self._save(self._at_rest(record))
        if record.phase in (Phase.CREATED, Phase.VERIFIED):
            if in_store == record.new_key_id:
                log.warning(
                    "rotation %s: key %s reached the store before the run died; grace restarts",
                    spec.name,
                    in_store,
                )
                now = self._clock()
                grace_ends = now + timedelta(seconds=spec.grace_seconds)
                return await self._save(
                    replace(
                        record,
                        phase=Phase.STORED,
                        new_version=secret.version,
                        stored_at=now,
                        next_due_at=grace_ends,
                    )
                )
            log.warning(
                "rotation %s: deleting key %s, created by a run that died before storing it",
                spec.name,
                record.new_key_id,
            )
            await self._delete_strays(spec, keep=in_store)
            return await self._save(self._at_rest(record))
        return record

    # --- create, verify, store --------------------------------------------------------------

    async def _create_verify_store(
        self, spec: ManagedKey, record: RotationRecord, secret: SecretVersion
    ) -> RotationRecord:
        old = AccessKey.from_secret(secret)
        driver = self._drivers[spec.name]
        await self._delete_strays(spec, keep=old.access_key_id)  # at most two keys, ever
        now = self._clock()
        record = await self._save(
            replace(
                record,
                phase=Phase.CREATING,
                old_key_id=old.access_key_id,
                new_key_id=None,
                old_version=secret.version,
                new_version=None,
                started_at=now,
                stored_at=None,
                finished_at=None,
                next_due_at=now,  # if this run dies, the next one resumes at once
            )
        )
        new = await driver.create_key(keep=old.access_key_id)
        record = await self._save(
            replace(record, phase=Phase.CREATED, new_key_id=new.access_key_id)
        )
        log.info("rotation %s: created key %s for %s", spec.name, new.access_key_id, spec.user)

        try:
            await self._until_accepted(spec, new)
        except Exception:
            await self._discard_new(spec, record)
            raise
        record = await self._save(replace(record, phase=Phase.VERIFIED))

        data = {
            **secret.data,
            "access_key_id": new.access_key_id,
            "secret_access_key": new.secret_access_key,
        }
        try:
            version = await self._store.write(spec.secret_path, data, cas=secret.version)
        except CasMismatch:
            await self._discard_new(spec, record)  # someone else wrote first: ours never landed
            raise
        # Any other write error: the write may or may not have happened. The record stays at
        # verified; the next run reads the store and decides (stored, or an orphan to delete).
        now = self._clock()
        record = await self._save(
            replace(
                record,
                phase=Phase.STORED,
                new_version=version,
                stored_at=now,
                current_key_id=new.access_key_id,
                current_key_since=now,
                next_due_at=now + timedelta(seconds=spec.grace_seconds),
            )
        )
        log.info(
            "rotation %s: stored key %s as version %d of %s; old key %s retires in %g s",
            spec.name,
            new.access_key_id,
            version,
            spec.secret_path,
            old.access_key_id,
            spec.grace_seconds,
        )
        await self._switch(spec)
        return record

    async def _switch(self, spec: ManagedKey) -> None:
        """Tell the broker to drop its cached (old) key now. Best effort: the key is stored,
        and caches expire well within the grace period anyway."""
        if self._on_switch is None:
            return
        try:
            await self._on_switch(spec.secret_path)
        except Exception as exc:
            log.warning("rotation %s: switch notice failed (%s)", spec.name, type(exc).__name__)

    async def _until_accepted(self, spec: ManagedKey, key: AccessKey) -> None:
        async for attempt in self._retrying((ObjectStoreRejected, ObjectStoreUnavailable)):
            with attempt:
                await self._probe.accepts(
                    key, via=spec.verify_via, role_arn=spec.role_arn, proof=spec.proof
                )

    async def _discard_new(self, spec: ManagedKey, record: RotationRecord) -> None:
        """Delete a new key that will never be used; if that fails too, the next run does."""
        assert record.new_key_id is not None
        try:
            await self._drivers[spec.name].delete_key(record.new_key_id)
        except CredbrokerError as exc:
            log.warning(
                "rotation %s: could not delete unused key %s yet (%s); the next run will",
                spec.name,
                record.new_key_id,
                exc.code,
            )
            return
        await self._save(self._at_rest(record))

    # --- delete the old key, prove it is refused --------------------------------------------

    async def _delete_old(self, spec: ManagedKey, record: RotationRecord) -> RotationRecord:
        in_store = AccessKey.from_secret(await self._store.read(spec.secret_path))
        if in_store.access_key_id == record.old_key_id:
            raise RotationFailed(
                f"the secret at {spec.secret_path} holds the old key {record.old_key_id} again; "
                "it is not deleted (see runbooks/06-rotation.md)"
            )
        if in_store.access_key_id != record.new_key_id:
            log.warning(
                "rotation %s: the store now holds key %s, not %s; keeping the store's key",
                spec.name,
                in_store.access_key_id,
                record.new_key_id,
            )
        await self._delete_strays(spec, keep=in_store.access_key_id, retiring=record.old_key_id)
        return await self._save(replace(record, phase=Phase.OLD_DELETED, next_due_at=self._clock()))

    async def _prove_old_refused(self, spec: ManagedKey, record: RotationRecord) -> RotationRecord:
        driver = self._drivers[spec.name]
        assert record.old_key_id is not None
        await driver.delete_key(record.old_key_id)  # idempotent: a resumed run
        old = await self._old_key(spec, record)
        if old is not None:
            try:
                async for attempt in self._retrying((_StillAccepted, ObjectStoreUnavailable)):
                    with attempt:
                        if not await self._probe.refuses(
                            old, via=spec.verify_via, role_arn=spec.role_arn
                        ):
                            raise _StillAccepted()
            except _StillAccepted:
                raise RotationFailed(
                    f"old key {record.old_key_id} is still accepted {self._verify_timeout:g} s "
                    "after its deletion"
                ) from None
        elif driver.fixed_keys:
            # A pair's keys are always listed, and no admin API shows a secret: the scramble
            # above is all that can be done without the old secret to sign with.
            log.warning(
                "rotation %s: old secret of %s unreadable; its scramble is not proven",
                spec.name,
                record.old_key_id,
            )
        elif record.old_key_id in await driver.list_keys():
            raise RotationFailed(f"old key {record.old_key_id} is still listed after deletion")
        now = self._clock()
        record = await self._save(
            replace(
                record,
                phase=Phase.DONE,
                finished_at=now,
                last_success_at=now,
                last_error=None,
                attempts=0,
                next_due_at=self.credential(spec.name).schedule.next_after(now),
            )
        )
        self._metrics.rotation_succeeded(spec.name, now)
        log.info(
            "rotation %s: done; key %s in service, old key %s refused by the object store",
            spec.name,
            record.new_key_id,
            record.old_key_id,
        )
        return record

    async def _old_key(self, spec: ManagedKey, record: RotationRecord) -> AccessKey | None:
        """The old key with its secret, from the version the rotation replaced (the secret is
        needed to sign the call that must be refused). None if the store cannot give it."""
        if record.old_version is None:
            return None
        try:
            secret = await self._store.read_version(spec.secret_path, record.old_version)
        except SecretNotFound:
            log.warning(
                "rotation %s: version %s of %s is gone; the old key's absence is checked "
                "through the admin API only",
                spec.name,
                record.old_version,
                spec.secret_path,
            )
            return None
        old = AccessKey.from_secret(secret)
        return old if old.access_key_id == record.old_key_id else None

    # --- keys the store does not hold --------------------------------------------------------

    async def _delete_strays(
        self, spec: ManagedKey, *, keep: str, retiring: str | None = None
    ) -> list[str]:
        """Delete every key of the user but `keep` (the store's), after checking that `keep`
        is one of them. `retiring` names the one deletion that is expected."""
        driver = self._drivers[spec.name]
        keys = await driver.list_keys()
        if keep not in keys:
            raise RotationFailed(
                f"the secret at {spec.secret_path} holds key {keep}, which is not a key of "
                f"{spec.user}; nothing was deleted (check rotation.credentials[].driver.user, "
                "or users)"
            )
        strays = [key for key in keys if key != keep]
        for key in strays:
            if driver.fixed_keys:  # the pair's other user: retired or standby, scrambled again
                log.info("rotation %s: scrambling the secret of %s", spec.name, key)
            elif key == retiring:
                log.info("rotation %s: deleting old key %s of %s", spec.name, key, spec.user)
            else:
                log.warning("rotation %s: deleting stray key %s of %s", spec.name, key, spec.user)
            await driver.delete_key(key)
            await self._record_event(spec.name, "key_deleted", key_id=key)
        return strays

    # --- bookkeeping --------------------------------------------------------------------------

    async def _enrolled(self, spec: ManagedKey) -> RotationRecord:
        record = await self._state.load(spec.name)
        fingerprint = spec.schedule.fingerprint
        if record is not None and record.schedule_fingerprint == fingerprint:
            self._latest[spec.name] = record
            self._key_since[spec.name] = record.current_key_since
            return record
        now = self._clock()
        if record is None:
            record = RotationRecord(spec.name, next_due_at=spec.schedule.next_after(now))
        elif not record.phase.in_progress and record.attempts == 0:
            # A changed schedule takes effect now: the next due time counts from the last
            # success (or from now), under the new schedule.
            record = replace(
                record, next_due_at=spec.schedule.next_after(record.last_success_at or now)
            )
            log.info(
                "rotation %s: schedule is now %s; next run %s",
                spec.name,
                spec.schedule.describe(),
                record.next_due_at,
            )
        return await self._save(replace(record, schedule_fingerprint=fingerprint))

    async def _noticed(self, record: RotationRecord, current: AccessKey) -> RotationRecord:
        if record.current_key_id == current.access_key_id:
            return record
        if record.current_key_id is not None:
            log.info(
                "rotation %s: the store now holds key %s (was %s)",
                record.credential,
                current.access_key_id,
                record.current_key_id,
            )
        return await self._save(
            replace(record, current_key_id=current.access_key_id, current_key_since=self._clock())
        )

    async def _failed(self, spec: ManagedKey, exc: Exception) -> RotationRecord:
        record = self._latest.get(spec.name) or RotationRecord(spec.name)
        attempts = record.attempts + 1
        delay = self._retry.delay(attempts)
        if isinstance(exc, CredbrokerError):
            reason = f"{exc.message} [{exc.code}]"
        else:  # a bug: the class name only (a third-party message could hold anything)
            reason = f"unexpected {type(exc).__name__}"
            log.debug("rotation %s: unexpected error", spec.name, exc_info=True)
        record = replace(
            record,
            attempts=attempts,
            last_error=reason,
            next_due_at=self._clock() + timedelta(seconds=delay),
        )
        try:
            record = await self._save(record)
        except CredbrokerError as save_error:
            log.error("rotation %s: cannot record the failure: %s", spec.name, save_error.message)
        self._metrics.set_consecutive_failures(spec.name, attempts)
        log.error(
            "rotation %s failed (attempt %d, phase %s): %s; key %s stays in service; retry in %g s",
            spec.name,
            attempts,
            record.phase.value,
            reason,
            record.current_key_id,
            delay,
        )
        await self._record_event(spec.name, "failed", error=reason, attempts=attempts)
        return record

    async def _save(self, record: RotationRecord) -> RotationRecord:
        previous = self._latest.get(record.credential)
        record = replace(record, updated_at=self._clock())
        await self._state.save(record)
        self._latest[record.credential] = record
        self._key_since[record.credential] = record.current_key_since
        if previous is None or previous.phase is not record.phase:
            await self._record_event(
                record.credential,
                record.phase.value,
                old_key_id=record.old_key_id,
                new_key_id=record.new_key_id,
            )
            if self._checkpoint is not None:
                await self._checkpoint(record.credential, record.phase)
        return record

    async def _record_event(self, name: str, step: str, **fields: Any) -> None:
        if self._audit is None:
            return
        event = {"ts": self._clock().isoformat(), "event": "rotation", "credential": name}
        await self._audit.record({**event, "step": step, **fields})

    def _at_rest(self, record: RotationRecord) -> RotationRecord:
        phase = Phase.DONE if record.last_success_at is not None else Phase.IDLE
        return replace(record, phase=phase, new_key_id=None, new_version=None)

    def _due(self, record: RotationRecord) -> bool:
        return record.next_due_at is None or record.next_due_at <= self._clock()

    def _age_of(self, name: str) -> Callable[[], float]:
        """The key-age gauge's value, computed at scrape time (NaN until the key is known)."""

        def age() -> float:
            since = self._key_since.get(name)
            return float("nan") if since is None else (self._clock() - since).total_seconds()

        return age

    def _retrying(self, errors: tuple[type[BaseException], ...]) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception_type(errors),
            wait=wait_exponential(multiplier=0.25, max=5.0),
            stop=stop_after_delay(self._verify_timeout) | stop_after_attempt(40),
            sleep=self._sleep,
            reraise=True,
        )
