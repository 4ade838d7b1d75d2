"""Fair use in memory (limits.py): the token bucket and the in-flight cap, on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from credbroker.config import Settings
from credbroker.limits import InFlightCap, Rate, TokenBuckets
from credbroker.wiring import build_limits
from tests.fakes import MonotonicClock


def test_a_client_spends_its_burst_then_waits_for_the_refill() -> None:
    clock = MonotonicClock()
    buckets = TokenBuckets(Rate(per_second=2.0, burst=3), clock=clock)

    assert [buckets.try_acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.try_acquire("a") == pytest.approx(0.5)  # one token every 0.5 s
    clock.now += 0.25
    assert buckets.try_acquire("a") == pytest.approx(0.25)  # a refusal spends nothing
    clock.now += 0.25
    assert buckets.try_acquire("a") == 0.0
    assert buckets.try_acquire("a") == pytest.approx(0.5)


def test_the_refill_stops_at_the_burst() -> None:
    clock = MonotonicClock()
    buckets = TokenBuckets(Rate(per_second=10.0, burst=2), clock=clock)
    buckets.try_acquire("a")
    clock.now += 3600
    assert [buckets.try_acquire("a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.try_acquire("a") > 0


def test_clients_have_their_own_buckets_and_their_own_rates() -> None:
    clock = MonotonicClock()
    buckets = TokenBuckets(
        Rate(per_second=1.0, burst=1), {"batch": Rate(per_second=100.0, burst=5)}, clock=clock
    )
    assert buckets.try_acquire("flood") == 0.0
    assert buckets.try_acquire("flood") == pytest.approx(1.0)
    assert buckets.try_acquire("other") == 0.0  # the flood does not touch another client
    assert [buckets.try_acquire("batch") for _ in range(5)] == [0.0] * 5
    assert buckets.try_acquire("batch") == pytest.approx(0.01)


def test_several_workers_each_grant_their_share_of_every_rate() -> None:
    """`serve --workers 3`: each process counts alone, so each grants a third (the burst
    rounded up, at least 1): together never more than configured."""
    clock = MonotonicClock()
    buckets = TokenBuckets(
        Rate(per_second=3.0, burst=7),
        {"batch": Rate(per_second=30.0, burst=2)},
        clock=clock,
        processes=3,
    )
    assert [buckets.try_acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # ceil(7 / 3)
    assert buckets.try_acquire("a") == pytest.approx(1.0)  # 1 token/s each
    assert buckets.try_acquire("batch") == 0.0  # ceil(2 / 3) = 1
    assert buckets.try_acquire("batch") == pytest.approx(0.1)  # 10/s each
    with pytest.raises(ValueError, match="processes"):
        TokenBuckets(Rate(1.0, 1), processes=0)


def test_build_limits_divides_by_the_configured_workers() -> None:
    rate = build_limits(
        settings(server={"workers": 4}, limits={"rate_per_second": 8, "burst": 8})
    ).rate
    assert [rate.try_acquire("a") for _ in range(2)] == [0.0, 0.0]
    assert rate.try_acquire("a") > 0


def test_a_clock_that_steps_back_refills_nothing() -> None:
    clock = MonotonicClock()
    buckets = TokenBuckets(Rate(per_second=1.0, burst=1), clock=clock)
    buckets.try_acquire("a")
    clock.now -= 100
    assert buckets.try_acquire("a") == pytest.approx(1.0)


def test_the_in_flight_cap_refuses_past_its_limit_and_frees_on_leave() -> None:
    cap = InFlightCap(2)
    assert (cap.try_enter(), cap.try_enter(), cap.try_enter()) == (True, True, False)
    assert cap.current == 2
    cap.leave()
    assert cap.try_enter() is True
    cap.leave()
    cap.leave()
    cap.leave()  # one too many never goes negative
    assert cap.current == 0


def test_rates_and_caps_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        Rate(per_second=0, burst=1)
    with pytest.raises(ValueError):
        Rate(per_second=1, burst=0)
    with pytest.raises(ValueError):
        InFlightCap(0)


def settings(**extra: Any) -> Settings:
    return Settings.model_validate(
        {
            "object_store": {
                "endpoint": "http://127.0.0.1:7480",
                "role_arn": "arn:aws:iam:::role/x",
                "credentials_path": "p",
            },
            "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
            "clients": [
                {"id": "batch", "token_sha256": "a" * 64, "spaces": ["ENG"], "burst": 500},
                {"id": "plain", "token_sha256": "b" * 64, "spaces": ["ENG"]},
            ],
            **extra,
        }
    )


def test_limits_are_on_by_default_and_a_client_may_have_its_own() -> None:
    limits = build_limits(settings())
    assert limits.in_flight.limit == 256 and limits.body_timeout_seconds == 30
    assert isinstance(limits.rate, TokenBuckets)
    plain = [limits.rate.try_acquire("plain") for _ in range(101)]  # the default burst: 100
    assert set(plain[:100]) == {0.0} and plain[100] > 0
    batch = [limits.rate.try_acquire("batch") for _ in range(501)]  # its own burst: 500
    assert set(batch[:500]) == {0.0} and batch[500] > 0

    tight = build_limits(settings(limits={"rate_per_second": 1, "burst": 1, "max_in_flight": 3}))
    assert tight.in_flight.limit == 3
    assert tight.rate.try_acquire("plain") == 0.0
    assert tight.rate.try_acquire("plain") > 0


@pytest.mark.parametrize(
    "bad",
    [
        {"limits": {"rate_per_second": 0}},
        {"limits": {"burst": 0}},
        {"limits": {"max_in_flight": 0}},
        {"limits": {"body_timeout_seconds": 0}},
        {"limits": {"keepalive_timeout_seconds": -1}},
        {"limits": {"max_connections": 0}},
        {"limits": {"header_timeout_seconds": 0}},
        {"limits": {"unknown": 1}},
        {"clients": [{"id": "x", "token_sha256": "c" * 64, "spaces": ["ENG"], "burst": 0}]},
    ],
)
def test_nonsense_limits_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        settings(**bad)
