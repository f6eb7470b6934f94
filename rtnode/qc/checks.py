"""One QC check: an id, pass/warn/fail (or skip when it does not apply), and a one-line reason
a physicist can act on. Details (per-ROI numbers) ride along for qc.json and the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["pass", "warn", "fail", "skip"]
ORDER = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}


@dataclass
class Check:
    id: str
    title: str
    status: Status
    reason: str
    details: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def passed(id: str, title: str, reason: str, details=None) -> Check:
    return Check(id, title, "pass", reason, details or [])


def skipped(id: str, title: str, reason: str) -> Check:
    return Check(id, title, "skip", reason)


def worst(problems: list[tuple[str, str]]) -> Status:
    """The most severe status among (status, text) problems."""
    return min((s for s, _ in problems), key=ORDER.__getitem__)  # type: ignore[return-value]


def from_problems(id: str, title: str, problems: list[tuple[str, str]], ok: str,
                  details=None) -> Check:
    """pass with ``ok`` when there are no problems, else the worst status and every problem
    joined on one line (most severe first)."""
    if not problems:
        return passed(id, title, ok, details)
    ranked = sorted(problems, key=lambda p: ORDER[p[0]])
    return Check(id, title, worst(problems), "; ".join(t for _, t in ranked), details or [])


def overall(checks: list[Check]) -> Status:
    """fail if any check failed, else warn if any warned, else pass."""
    statuses = {c.status for c in checks}
    for s in ("fail", "warn"):
        if s in statuses:
            return s  # type: ignore[return-value]
    return "pass"
