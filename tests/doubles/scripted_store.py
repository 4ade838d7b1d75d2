"""ScriptedStore: a SecretStore that answers from a script, for unit tests of what wraps it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from credbroker.domain import SecretVersion
from credbroker.errors import SecretStoreUnavailable

DOWN = SecretStoreUnavailable("vault read of 'p': cannot connect")


class ScriptedStore:
    """Each call pops the next outcome: an exception is raised, anything else returned.

    When the script runs out, reads return SecretVersion({"k": "v"}, 1).
    """

    kind = "scripted"
    writable = True

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[str] = []
        self.closed = False

    def _next(self, action: str) -> Any:
        self.calls.append(action)
        outcome = self.outcomes.pop(0) if self.outcomes else SecretVersion({"k": "v"}, 1)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def read(self, path: str) -> SecretVersion:
        result: SecretVersion = self._next("read")
        return result

    async def write(self, path: str, data: Mapping[str, str], *, cas: int | None) -> int:
        self._next("write")
        return 2

    async def check(self) -> None:
        self._next("check")

    async def close(self) -> None:
        self.closed = True
