"""Prometheus metrics, one registry per application (tests build many apps in one process).

With `serve --workers N` every worker writes its counters, histograms and gauges to files in
$PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode, web/workers.py) and a scrape,
answered by any worker, adds them up. Each gauge says how (`multiprocess_mode`). What only
the answering process knows (its open connections, its breaker, a key age computed at scrape
time) lives in a second registry, `live`, reported as that process sees it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.live = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "credbroker_requests",
            "API requests by route and outcome",
            ["route", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "credbroker_request_seconds",
            "API request latency",
            ["route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.upstream_failures = Counter(
            "credbroker_upstream_failures",
            "Failed calls to outside systems",
            ["upstream", "code"],
            registry=r,
        )
        self.parent_key_refreshes = Counter(
            "credbroker_parent_key_refreshes",
            "Cached service keys rejected by the object store and re-read",
            registry=r,
        )
        self.degraded = Gauge(
            "credbroker_degraded",
            "1 while serving from read-only fallback credentials",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.secret_store_breaker = Enum(
            "credbroker_secret_store_breaker",
            "Circuit breaker around the secret store (of the process answering the scrape)",
            states=["closed", "open", "half_open"],
            registry=self.live,
        )
        self.secret_rollbacks = Counter(
            "credbroker_secret_rollbacks",
            "Secret reads and writes refused: the embedded store was rolled back (a version "
            "older than one seen before) or a record was swapped (sealed for another path)",
            ["reason"],
            registry=r,
        )
        # Fair use (web/limits.py), per replica.
        self.rate_limited = Counter(
            "credbroker_rate_limited",
            "Vends and presigns refused with 429 rate_limited, by client",
            ["client"],
            registry=r,
        )
        self.overloaded = Counter(
            "credbroker_overloaded",
            "Requests and connections refused with 503 overloaded, by which cap",
            ["cap"],
            registry=r,
        )
        self.in_flight = Gauge(
            "credbroker_in_flight",
            "Vends and presigns being worked on",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections = Gauge(
            "credbroker_connections",
            "Open client connections (of the process answering the scrape)",
            registry=self.live,
        )
        self.tls_handshake_failures = Counter(
            "credbroker_tls_handshake_failures",
            "Connections closed because their TLS handshake failed (no or a foreign client "
            "certificate when required, not TLS, too old a version, too slow)",
            registry=r,
        )
        # Rotation of the broker's own keys (rotation/rotate.py). Alert on a failure streak
        # (rotation_consecutive_failures > 0) and on a stale last success.
        self.rotations = Counter(
            "credbroker_rotations",
            "Rotation runs by credential and outcome (completed, waiting_grace, failed, busy, ...)",
            ["credential", "outcome"],
            registry=r,
        )
        self.rotation_last_success = Gauge(
            "credbroker_rotation_last_success_timestamp_seconds",
            "When the last rotation of a credential completed (Unix time)",
            ["credential"],
            registry=r,
            multiprocess_mode="max",
        )
        self.rotation_failures = Gauge(
            "credbroker_rotation_consecutive_failures",
            "Failed rotation runs since the last success",
            ["credential"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.rotation_key_age = Gauge(
            "credbroker_rotation_key_age_seconds",
            "Age of the key in service: since the broker stored it, or first saw it",
            ["credential"],
            registry=self.live,
        )

        self.frozen_refusals = Counter(
            "credbroker_frozen_refusals_total",
            "Vends and presigns refused by a freeze",
            ["action"],
            registry=r,
        )
        self.freezes_active = Gauge(
            "credbroker_freezes_active",
            "Active freezes in this replica's snapshot",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.control_generation = Gauge(
            "credbroker_control_generation",
            "The state store's change number this replica's principals and freezes reflect",
            registry=r,
            multiprocess_mode="livemin",  # the worker furthest behind
        )
        self.control_refresh_failures = Counter(
            "credbroker_control_refresh_failures_total",
            "Refreshes of principals and freezes the state store did not answer",
            registry=r,
        )

        self.rotation_next_due = Gauge(
            "credbroker_rotation_next_due_timestamp_seconds",
            "When the state store says the next rotation run of a credential is due (Unix "
            "time; a rotation is overdue when this lies well in the past)",
            ["credential"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        # /readyz (web/readiness.py): one series per named check, 1 passing, 0 failing.
        self.readiness_check = Gauge(
            "credbroker_readiness_check",
            "1 while a readiness check passes (secret_store, object_store, secrets, "
            "read_only_fallback, vend_canary), 0 while it fails",
            ["check"],
            registry=r,
            multiprocess_mode="livemin",  # failing in any live worker: 0
        )
        self.audit_failures = Counter(
            "credbroker_audit_failures",
            "Audit records that could not be written, by sink (each refused its request)",
            ["sink"],
            registry=r,
        )
        self.compliance_failed = Gauge(
            "credbroker_compliance_failed_controls",
            "Controls the last compliance check found failing (0: all pass)",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        # Break-glass (breakglass.py): every step, and the webhook that announces it.
        self.break_glass_steps = Counter(
            "credbroker_break_glass_steps",
            "Break-glass steps by step (request, approve, deny, share, collect, close, expire) "
            "and outcome (ok, or the refusal's code)",
            ["step", "outcome"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "credbroker_webhook_deliveries",
            "Break-glass notifications by outcome (delivered, failed)",
            ["outcome"],
            registry=r,
        )

    def count_audit_failure(self, sink: str) -> None:
        self.audit_failures.labels(sink).inc()

    def set_readiness_check(self, check: str, ok: bool) -> None:
        self.readiness_check.labels(check).set(1 if ok else 0)

    def exposition(self) -> bytes:
        """The text a scrape gets: every worker's figures added up when several share the port
        (multiprocess mode), else this registry's; then this process's live ones."""
        directory = os.environ.get(MULTIPROCESS_DIR_ENV)
        if directory:
            combined = CollectorRegistry()
            MultiProcessCollector(combined, path=directory)  # type: ignore[no-untyped-call]
            shared = generate_latest(combined)
        else:
            shared = generate_latest(self.registry)
        return shared + generate_latest(self.live)

    # --- ports.BreakGlassMetrics ------------------------------------------------------------

    def count_break_glass(self, step: str, outcome: str) -> None:
        self.break_glass_steps.labels(step, outcome).inc()

    # --- ports.BrokerMetrics ----------------------------------------------------------------

    def count_parent_key_refresh(self) -> None:
        self.parent_key_refreshes.inc()

    def set_degraded(self, degraded: bool) -> None:
        self.degraded.set(1 if degraded else 0)

    def count_frozen(self, action: str) -> None:
        self.frozen_refusals.labels(action).inc()

    # --- ports.ControlMetrics -----------------------------------------------------------------

    def control_refreshed(self, generation: int, active_freezes: int) -> None:
        self.control_generation.set(generation)
        self.freezes_active.set(active_freezes)

    def count_control_refresh_failure(self) -> None:
        self.control_refresh_failures.inc()

    def count_secret_refused(self, reason: str) -> None:
        """The embedded store refused a rolled-back ("rolled_back") or swapped record."""
        self.secret_rollbacks.labels(reason).inc()

    # --- ports.RotationMetrics ----------------------------------------------------------------

    def watch_key_age(self, credential: str, age: Callable[[], float]) -> None:
        self.rotation_key_age.labels(credential).set_function(age)

    def count_run(self, credential: str, result: str) -> None:
        self.rotations.labels(credential, result).inc()

    def rotation_succeeded(self, credential: str, at: datetime) -> None:
        self.rotation_last_success.labels(credential).set(at.timestamp())
        self.rotation_failures.labels(credential).set(0)

    def set_consecutive_failures(self, credential: str, failures: int) -> None:
        self.rotation_failures.labels(credential).set(failures)

    def set_next_due(self, credential: str, at: datetime | None) -> None:
        if at is None:
            with contextlib.suppress(KeyError):  # never set: nothing to remove
                self.rotation_next_due.remove(credential)
        else:
            self.rotation_next_due.labels(credential).set(at.timestamp())
