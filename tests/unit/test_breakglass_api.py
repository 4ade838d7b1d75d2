"""The break-glass admin routes are all in the OpenAPI document, their examples are valid
bodies, and the CLI reads TTLs as an operator writes them."""

from __future__ import annotations

import argparse
import re

import pytest

from credbroker.cli_breakglass import _seconds
from credbroker.config import Settings
from credbroker.web import admin_breakglass, openapi
from credbroker.web.app import create_app


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_every_break_glass_route_is_in_the_openapi_document() -> None:
    settings = Settings.model_validate(
        {
            "object_store": {"endpoint": "http://127.0.0.1:9000"},
            "spaces": {"ENG": {"bucket": "exports", "prefix": "ENG/"}},
        }
    )
    app = create_app(settings)
    documented = {
        (_template(path), method.upper())
        for path, operations in openapi.document()["paths"].items()
        for method in operations
    }
    served = {
        (_template(route.resource.canonical), route.method)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith(admin_breakglass.PREFIX)
        and route.method != "HEAD"
    }
    assert len(served) == 8
    assert served <= documented
    collect = openapi.document()["paths"][admin_breakglass.PREFIX + "/{id}/collect"]["post"]
    assert collect["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Credentials"
    }


def test_the_documented_example_is_a_valid_body() -> None:
    model = admin_breakglass.BreakGlassRequestBody
    for example in model.model_json_schema()["examples"]:
        model.model_validate(example)


def test_a_share_never_shows_in_the_body_repr() -> None:
    body = admin_breakglass.ShareBody(share="cbes1-0123456789abcdef-1-" + "ab" * 32)
    assert "cbes1" not in repr(body)


@pytest.mark.parametrize(
    ("text", "seconds"), [("900", 900), ("15m", 900), ("1h", 3600), ("2d", 172800), ("30s", 30)]
)
def test_ttls_are_read_as_written(text: str, seconds: int) -> None:
    assert _seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "15 minutes", "-5m", "1.5h", "1w"])
def test_other_ttls_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _seconds(text)


def test_break_glass_config_defaults_and_refusals() -> None:
    from pydantic import ValidationError

    from credbroker.config import BreakGlassConfig

    default = BreakGlassConfig()
    assert (default.approvals_required, default.ttl_cap_seconds, default.escrow_file) == (
        2,
        3600,
        None,
    )
    for bad in (
        {"approvals_required": 0},
        {"ttl_cap_seconds": 600},
        {"escrow_fingerprint": "not-hex"},
        {"webhook": {"url": "ftp://chat"}},
        {"webhook": {"url": "https://chat", "attempts": 0}},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            BreakGlassConfig.model_validate(bad)


def test_a_plain_http_webhook_outside_loopback_is_refused_unless_allowed() -> None:
    from pydantic import ValidationError

    raw = {
        "object_store": {"endpoint": "http://127.0.0.1:9000"},
        "spaces": {"ENG": {"bucket": "exports", "prefix": "ENG/"}},
        "break_glass": {"webhook": {"url": "http://chat.example.com/hook"}},
    }
    with pytest.raises(ValidationError, match=r"break_glass\.webhook\.url"):
        Settings.model_validate(raw)
    assert Settings.model_validate({**raw, "allow_insecure_transport": True}).insecure_transport()
    raw["break_glass"] = {"webhook": {"url": "http://127.0.0.1:8099/hook"}}
    assert Settings.model_validate(raw).insecure_transport() == []
