"""One alert notice: which rule, about what, the numbers, and whether it fires or resolves.

Alerts carry channel, destination and device names and numbers, never message content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class AlertState(StrEnum):
    """A notice that a condition began (firing) or ended (resolved)."""

    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    """What every receiver gets; `as_json()` is the webhook body."""

    rule: str
    type: str
    state: AlertState
    subject: dict[str, str]
    value: float
    threshold: float
    summary: str
    at: float
    node: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """One line for a mail subject or a chat message."""
        about = " ".join(f"{k} {v}" for k, v in self.subject.items())
        return f"{self.state.value.upper()} {self.rule}: {about}".strip()

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "type": self.type, "state": self.state.value,
            "subject": dict(self.subject), "value": self.value, "threshold": self.threshold,
            "summary": self.summary, "node": self.node,
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(), **self.extra,
        }
