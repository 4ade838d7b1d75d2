"""The rotation gauges follow the state store, not the process that ran the rotation: a server
whose own runs failed shows the success another process (the CLI, cron, a replica) recorded
once its scheduler resyncs (issue 16)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from credbroker.errors import SecretStoreUnavailable
from credbroker.observability import Metrics
from credbroker.rotation.model import ManagedKey, RetryPolicy
from credbroker.rotation.rotate import Rotator
from credbroker.rotation.schedule import Schedule
from credbroker.rotation.scheduler import RotationScheduler
from credbroker.secrets.embedded import EmbeddedSecretStore
from credbroker.state.sqlite import SqliteStateStore
from tests.fake_object_store import FakeObjectStore
from tests.fakes import Clock

PATH = "credbroker/object-store/service"


def gauge(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"credential": "service"})


async def test_a_resync_shows_what_another_process_recorded(tmp_path: Path) -> None:
    objects, clock = FakeObjectStore(), Clock()
    store = EmbeddedSecretStore(tmp_path / "secrets.sealed", os.urandom(32))
    await store.write(PATH, objects.add_key("broker").as_secret_data(), cas=0)
    state = await SqliteStateStore.open(tmp_path / "state.sqlite3")
    spec = ManagedKey(
        name="service",
        secret_path=PATH,
        user="broker",
        schedule=Schedule(interval_seconds=86400),
        grace_seconds=60,
    )

    def process(metrics: Metrics) -> Rotator:
        return Rotator(
            credentials=[spec],
            drivers={"service": objects.driver_for("broker")},
            store=store,
            state=state,
            probe=objects.probe,
            metrics=metrics,
            retry=RetryPolicy(60, 3600),
            verify_timeout_seconds=5,
            clock=clock,
            sleep=clock.sleep,
        )

    try:
        server_metrics, cli_metrics = Metrics(), Metrics()
        server, cli = process(server_metrics), process(cli_metrics)
        objects.fail["create"] = lambda: SecretStoreUnavailable("admin API down")
        for _ in range(2):
            assert (await server.run("service", force=True)).result == "failed"
            clock.advance(120)
        assert gauge(server_metrics, "credbroker_rotation_consecutive_failures") == 2
        assert gauge(server_metrics, "credbroker_rotation_last_success_timestamp_seconds") is None
        del objects.fail["create"]

        # The documented repair, from another process.
        outcome = await cli.run("service", force=True, wait=True)
        assert outcome.result == "completed"
        success = outcome.record.last_success_at
        assert success is not None
        assert gauge(server_metrics, "credbroker_rotation_consecutive_failures") == 2  # stale

        scheduler = RotationScheduler(server, clock=clock)
        await scheduler.sync()  # what the resync job runs

        assert gauge(server_metrics, "credbroker_rotation_consecutive_failures") == 0
        assert (
            gauge(server_metrics, "credbroker_rotation_last_success_timestamp_seconds")
            == success.timestamp()
        )
        age = server_metrics.live.get_sample_value(  # computed at scrape time, per process
            "credbroker_rotation_key_age_seconds", {"credential": "service"}
        )
        assert age is not None and not math.isnan(age) and age >= 0
        record = await state.load("service")
        assert record is not None and record.current_key_id == outcome.record.current_key_id
    finally:
        await state.close()
