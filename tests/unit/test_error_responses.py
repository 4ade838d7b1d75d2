from __future__ import annotations

import pytest

from credbroker.web.errors import error_response


@pytest.mark.parametrize(
    ("retry_after", "header"), [(None, "5"), (0.2, "1"), (1.5, "2"), (9.0, "9"), (3600.0, "60")]
)
def test_503_says_when_to_retry(retry_after: float | None, header: str) -> None:
    response = error_response(503, "vault_unavailable", "down", retry_after=retry_after)
    assert response.headers["Retry-After"] == header


def test_other_statuses_carry_no_retry_after() -> None:
    assert "Retry-After" not in error_response(502, "upstream_error", "x").headers
