"""Prometheus metrics, one registry per application (tests build many apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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
        )
