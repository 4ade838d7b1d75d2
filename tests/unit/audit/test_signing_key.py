"""The signing key from the secret store (read at the first checkpoint) or a file; the public
key is published next to the log; a store that cannot be read means no checkpoint, counted."""

from __future__ import annotations

from pathlib import Path

from credbroker import wiring
from credbroker.audit.chain import generate_private_pem, read_files, verify_lines
from credbroker.audit.chain import load_public_key as public_of
from credbroker.config import Settings
from credbroker.errors import SecretStoreUnavailable
from credbroker.observability import Metrics
from tests.fakes import MemorySecretStore


def settings(tmp_path: Path, **audit: object) -> Settings:
    return Settings.model_validate(
        {
            "object_store": {"endpoint": "http://127.0.0.1:9"},
            "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
            "audit": {"path": str(tmp_path / "audit.jsonl"), **audit},
        }
    )


async def test_a_key_from_the_secret_store_signs_and_is_published(tmp_path: Path) -> None:
    store = MemorySecretStore()
    store.put("credbroker/audit", {"ed25519_private_key": generate_private_pem().decode()})
    config = settings(tmp_path, signing_key_secret_path="credbroker/audit")
    audit = wiring.build_audit(config, store=store)
    await audit.record({"event": "vend"})
    await audit.close()
    public = public_of((tmp_path / "audit.jsonl.pub").read_bytes())
    report = verify_lines(read_files([tmp_path / "audit.jsonl"]), public)
    assert report.ok and next(iter(report.chains.values())).status == "closed"


async def test_an_unreadable_store_means_no_checkpoint_and_a_count(tmp_path: Path) -> None:
    store = MemorySecretStore()
    store.down = SecretStoreUnavailable("sealed")
    metrics = Metrics()
    config = settings(tmp_path, signing_key_secret_path="credbroker/audit")
    audit = wiring.build_audit(config, store=store, metrics=metrics)
    await audit.record({"event": "vend"})  # the record itself is written
    await audit.close()
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"checkpoint"' not in lines[0]
    assert metrics.audit_failures.labels("signing-key")._value.get() == 1
