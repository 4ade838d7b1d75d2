"""What a compliance run finds: one result per control, pass or fail, with evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from credbroker.domain import utc_text


@dataclass(frozen=True)
class Control:
    name: str
    passed: bool
    summary: str
    evidence: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": "pass" if self.passed else "fail",
            "summary": self.summary,
            "evidence": list(self.evidence),
        }


@dataclass(frozen=True)
class ComplianceResult:
    started_at: datetime
    finished_at: datetime
    controls: list[Control]
    # space -> 24 counts: vends and presigns of each hour of the day checked (UTC), oldest first
    vends_per_hour: dict[str, list[int]]
    hours: list[str]  # the 24 hour labels ("2026-11-30T05")
    break_glass: list[dict[str, Any]]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.controls)

    def failed(self) -> list[str]:
        return [c.name for c in self.controls if not c.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "pass" if self.passed else "fail",
            "started_at": utc_text(self.started_at),
            "finished_at": utc_text(self.finished_at),
            "failed": self.failed(),
            "controls": [c.as_dict() for c in self.controls],
            "vends_per_space_hour": {"hours": self.hours, "spaces": self.vends_per_hour},
            "vends_total": sum(sum(v) for v in self.vends_per_hour.values()),
            "break_glass": self.break_glass,
        }
