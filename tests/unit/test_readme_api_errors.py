"""README's API error table lists every status and code the API can answer, and nothing else:
each class of the error tree (errors.py) with its status, each refined code raised in the
source, the web layer's own codes (web/errors.py) and grace_not_over."""

from __future__ import annotations

import re
from pathlib import Path

from credbroker import errors
from credbroker.rotation.model import RunResult
from credbroker.web.errors import _HTTP_CODES

ROOT = Path(__file__).parents[2]
# Raised only by CLI commands, never answered by the API.
CLI_ONLY = {"secret_differs"}


def table() -> dict[str, int]:
    text = (ROOT / "README.md").read_text()
    rows = text.split("<!-- api-errors:start -->")[1].split("<!-- api-errors:end -->")[0]
    found: dict[str, int] = {}
    for line in rows.strip().splitlines()[2:]:
        status, code, _ = (c.strip() for c in line.strip().strip("|").split("|", 2))
        assert code.strip("`") not in found, f"{code} listed twice"
        found[code.strip("`")] = int(status)
    return found


def error_classes() -> dict[str, int]:
    seen: dict[str, int] = {}
    pending: list[type[errors.CredbrokerError]] = [errors.CredbrokerError]
    while pending:
        cls = pending.pop()
        seen[cls.code] = cls.status
        pending.extend(cls.__subclasses__())
    return seen


def refined_codes() -> set[str]:
    codes = set()
    for path in (ROOT / "src" / "credbroker").rglob("*.py"):
        codes |= set(re.findall(r'\bcode="([a-z_]+)"', path.read_text()))
    return codes - CLI_ONLY


def test_every_class_of_the_error_tree_is_listed_with_its_status() -> None:
    listed = table()
    for code, status in error_classes().items():
        assert listed.get(code) == status, (code, status)


def test_every_refined_and_web_code_is_listed() -> None:
    listed = table()
    for code in refined_codes():
        assert code in listed, code
    for status, code in _HTTP_CODES.items():
        assert listed.get(code) == status, (code, status)
    assert listed.get(RunResult.GRACE_NOT_OVER.value) == 409
    assert listed.get("internal_error") == 500


def test_nothing_is_listed_that_the_code_cannot_answer() -> None:
    known = (
        set(error_classes())
        | refined_codes()
        | set(_HTTP_CODES.values())
        | {RunResult.GRACE_NOT_OVER.value}
    )
    assert sorted(set(table()) - known) == []
