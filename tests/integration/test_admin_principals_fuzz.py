"""Schema-driven fuzzing of the control plane's admin routes with an admin token, on the real
broker (real RGW, SQLite state): the generated requests, valid and schema-invalid, get no 5xx,
the statuses, content types and bodies the served /openapi.json declares, and every
schema-invalid one a 4xx. (test_openapi_fuzz.py fuzzes every route with a rule's token, which
the admin routes refuse with 403 before reading anything.) Derandomized."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from support.rgw_server import RgwServer
from tests.integration.conftest import Harness, start_broker
from tests.integration.test_openapi_fuzz import _CHECKS

pytestmark = pytest.mark.rgw

_EXAMPLES = 60


def _fuzz(base_url: str, token: str) -> Counter[int]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    statuses: Counter[int] = Counter()
    headers = {"Authorization": f"Bearer {token}"}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        if not operation.path.startswith(("/v1/admin/clients", "/v1/admin/freezes")):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.settings(
                max_examples=_EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call_and_validate(
                    base_url=base_url, headers=headers, checks=_CHECKS, timeout=30
                )
                statuses[response.status_code] += 1

            run()
    return statuses


@pytest.fixture
async def admin(rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path) -> AsyncIterator[Harness]:
    async with contextlib.aclosing(start_broker(rgw, tmp_path, admin_clients=["root"])) as brokers:
        async for harness in brokers:
            yield harness


async def test_generated_admin_requests_get_no_5xx_and_match_the_description(
    admin: Harness,
) -> None:
    base_url = str(admin.client.make_url("")).rstrip("/")
    statuses = await asyncio.to_thread(_fuzz, base_url, admin.tokens["root"])
    print(f"schemathesis (admin routes): {statuses.total()} requests, {sorted(statuses.items())}")
    assert statuses.total() >= 500
    assert not [status for status in statuses if status >= 500]
    assert statuses[400] > 0 and statuses[404] > 0
