"""/readyz and freezes: reported, never a reason to leave the load balancer. A global freeze
says "frozen" (200); a partial one leaves "ready" and is listed; an upstream failure still
says not_ready (503) whatever is frozen."""

from __future__ import annotations

from typing import Any

import pytest

from credbroker.callers.tokens import new_token
from credbroker.control import ControlPlane, freeze_dict
from credbroker.errors import SecretStorePermissionDenied
from credbroker.web.readiness import Readiness
from credbroker.web.schemas import Readiness as ReadinessAnswer
from credbroker.wiring import control_report
from tests.fakes import Clock, FakeAudit, MemoryPrincipalStore, MonotonicClock


async def ok() -> None: ...


async def refused() -> None:
    raise SecretStorePermissionDenied("403")


def control() -> ControlPlane:
    return ControlPlane(
        MemoryPrincipalStore(),
        seed=[],
        spaces={"ENG", "OPS"},
        audit=FakeAudit(),
        mint=new_token,
        clock=Clock(),
        monotonic=MonotonicClock(),
    )


def ready(plane: ControlPlane, secret_store: Any = ok) -> Readiness:
    return Readiness(
        secret_store=secret_store,
        object_store=ok,
        fallback=None,
        freezes=control_report(plane),
        clock=MonotonicClock(),
    )


async def test_no_freeze_is_ready_with_the_snapshot_generation() -> None:
    plane = control()
    await plane.refresh(force=True)
    status, body = await ready(plane).report()
    assert (status, body["status"]) == (200, "ready") and "freezes" not in body
    assert body["checks"]["control"] == {"ok": True, "generation": 0, "age_seconds": 0.0}
    ReadinessAnswer.model_validate(body)  # what the OpenAPI document says


async def test_a_space_freeze_is_listed_and_stays_ready() -> None:
    plane = control()
    freeze = await plane.freeze("op", reason="ENG incident", space="ENG")
    status, body = await ready(plane).report()
    assert (status, body["status"]) == (200, "ready")
    assert body["freezes"] == [freeze_dict(freeze)]
    ReadinessAnswer.model_validate(body)


async def test_a_global_freeze_says_frozen_with_the_reason() -> None:
    plane = control()
    await plane.freeze("op", reason="INC-9 all stop")
    status, body = await ready(plane).report()
    assert (status, body["status"]) == (200, "frozen")
    assert "INC-9 all stop" in body["reason"]
    ReadinessAnswer.model_validate(body)


@pytest.mark.parametrize("frozen", [False, True])
async def test_an_upstream_failure_is_not_ready_frozen_or_not(frozen: bool) -> None:
    plane = control()
    if frozen:
        await plane.freeze("op", reason="all stop")
    status, body = await ready(plane, refused).report()
    assert (status, body["status"]) == (503, "not_ready")
