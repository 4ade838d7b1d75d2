"""What `credbroker rotation status` and GET /v1/admin/rotations show for one managed
credential, read from the state store, the secret store and the object store's admin API.
Key ids only, never a secret; a source that cannot answer is named in `problems`."""

from __future__ import annotations

from datetime import datetime

from credbroker.domain import RotationRecord
from credbroker.errors import CredbrokerError
from credbroker.ports import KeyDriver, SecretStore
from credbroker.rotation.model import ManagedKey, ManagedKeyStatus


async def managed_key_status(
    spec: ManagedKey,
    record: RotationRecord,
    *,
    store: SecretStore,
    driver: KeyDriver,
    now: datetime,
) -> ManagedKeyStatus:
    problems: list[str] = []
    current: str | None = None
    try:
        current = (await store.read(spec.secret_path)).get("access_key_id")
    except CredbrokerError as exc:
        problems.append(f"secret store: {exc.message}")
    keys: list[str] | None = None
    if store.writable:
        try:
            keys = await driver.list_keys()
        except CredbrokerError as exc:
            problems.append(f"object store admin: {exc.message}")
    else:
        problems.append("read-only secret store: its owner rotates this key, not the broker")
    age = None
    if record.current_key_since is not None and current == record.current_key_id:
        age = (now - record.current_key_since).total_seconds()
    if keys is not None and current is not None and current not in keys:
        problems.append(f"key {current} in the store is not a key of {spec.user}")
    return ManagedKeyStatus(
        name=spec.name,
        secret_path=spec.secret_path,
        user=spec.user,
        driver=driver.kind,
        schedule=spec.schedule.describe(),
        grace_seconds=spec.grace_seconds,
        enabled=spec.enabled,
        writable=store.writable,
        phase=record.phase.value,
        current_key_id=current,
        key_age_seconds=age,
        keys=keys,
        last_success_at=record.last_success_at,
        next_due_at=record.next_due_at,
        last_error=record.last_error,
        attempts=record.attempts,
        problems=problems,
    )
