"""Schema-driven fuzzing of the running broker (real RGW) from its own GET /openapi.json.

Schemathesis generates requests from the description the broker serves, valid ones (positive)
and ones the schema forbids (negative), sends them over loopback with a real client token, and
checks every answer: no 5xx, the status and content type the description declares, the body its
schema, and every schema-invalid request refused with a 4xx. Derandomized: the same requests on
every run.
"""

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
from schemathesis.checks import CheckFunction
from schemathesis.core.result import Ok

from support.rgw_server import RgwServer
from tests.integration.conftest import Harness, start_broker

pytestmark = pytest.mark.rgw

# Per operation and generation mode. A GET without parameters runs out of distinct requests
# at once; the two vend routes give the bulk.
_EXAMPLES = 300


def rejected_or_too_large(ctx: Any, response: Any, case: Any) -> bool | None:
    """negative_data_rejection, with 413 counted as the rejection it is: a generated body past
    server.max_body_bytes (a long list of over-long strings) is refused before it is parsed,
    with the status the description declares."""
    if response.status_code == 413:
        return None
    verdict: bool | None = schemathesis.checks.negative_data_rejection(ctx, response, case)
    return verdict


_CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
    rejected_or_too_large,
]


def _fuzz(base_url: str, token: str) -> Counter[int]:
    """Blocking (requests): run off the event loop that serves the broker."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    statuses: Counter[int] = Counter()
    headers = {"Authorization": f"Bearer {token}"}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the served description is valid OpenAPI
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if operation.method.upper() == "POST":  # a GET without parameters has nothing to negate
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

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
async def unlimited(
    rgw: RgwServer, buckets: tuple[str, str], tmp_path: Path
) -> AsyncIterator[Harness]:
    """The broker with a rate limit the fuzzer never meets: every generated request reaches
    the vend path (fair use has its own tests, tests/integration/test_abuse.py)."""
    limits = {"rate_per_second": 1_000_000, "burst": 1_000_000}
    async with contextlib.aclosing(start_broker(rgw, tmp_path, limits=limits)) as brokers:
        async for harness in brokers:
            yield harness


async def test_generated_requests_get_no_5xx_and_answers_match_the_description(
    unlimited: Harness,
) -> None:
    broker = unlimited
    base_url = str(broker.client.make_url("")).rstrip("/")
    statuses = await asyncio.to_thread(_fuzz, base_url, broker.tokens["eng-writer"])
    print(f"schemathesis: {statuses.total()} requests, by status {sorted(statuses.items())}")
    assert statuses.total() >= 1000
    assert not [status for status in statuses if status >= 500]
    assert 429 not in statuses
    assert statuses[201] > 0  # some generated requests were valid enough to be vended


async def test_the_inputs_that_got_500_get_4xx_from_the_real_broker(broker: Harness) -> None:
    """Issue 9's list, on the real broker (the hang-up mid-body: tests/unit/test_error_responses,
    on a server run as `serve` runs it; aiohttp's test server cancels the view instead)."""
    headers = {
        "Authorization": f"Bearer {broker.tokens['eng-writer']}",
        "Content-Type": "application/json",
    }
    bodies = {
        "5,000-digit ttl": b'{"space": "ENG", "access": "read", "ttl_seconds": '
        + b"7" * 5000
        + b"}",
        "nested 8,000 deep": b'{"space": "ENG", "access": "read", "reason": '
        + b"[" * 8000
        + b"]" * 8000
        + b"}",
        "U+2028 in reason": '{"space": "ENG", "access": "read", "reason": "a\u2028b"}'.encode(),
        "bidi override in actor": '{"space": "ENG", "access": "read", "actor": "\u202e"}'.encode(),
    }
    for name, body in bodies.items():
        response = await broker.client.post("/v1/credentials", data=body, headers=headers)
        assert response.status == 400, name
        assert (await response.json())["error"]["code"] in {"invalid_json", "invalid_field"}
    assert broker.client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.client.port)
    writer.write(
        b"POST /v1/credentials HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer cbk_\xff\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    answer = await reader.read()
    writer.close()
    assert answer.split(b"\r\n", 1)[0].split()[1] == b"401"
