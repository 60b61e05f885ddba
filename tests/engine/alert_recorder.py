"""An alert receiver for tests: the alert monitor's tests and the device tracker's both
need to see exactly which alerts went out, in order, without a real channel."""

from __future__ import annotations

from engine.alerts.alert import Alert


class Recorder:
    """A receiver that keeps what it was given."""

    name = "recorder"

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def send(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def states(self) -> list[tuple[str, str]]:
        """(rule, state) of every alert sent, in order."""
        return [(a.rule, a.state.value) for a in self.alerts]
