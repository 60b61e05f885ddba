"""The alert loop: evaluate every rule on the clock, announce changes, respect cool-downs.

For each rule and subject (a channel, a destination, a device) the monitor remembers
whether a "firing" notice went out. A condition that starts fires once; while it holds
nothing more is sent; when it clears a "resolved" notice follows. After a firing notice
the same rule and subject stay quiet for the cool-down, so a flapping link gives at most
one firing and one resolved notice per cool-down; a condition that is still true when the
cool-down ends fires then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from engine.alerts.alert import Alert, AlertState
from engine.alerts.config import AlertsConfig, ErrorCountRule, ErrorRateRule, Rule
from engine.alerts.devices import DeviceSilenceProvider
from engine.alerts.receivers import Receiver
from engine.alerts.rules import ErrorHistory, Finding, RuleEvaluator, Subject
from engine.metrics import EngineMetrics

log = Logger()


@dataclass(slots=True)
class _Standing:
    """What the monitor remembers of one rule and subject."""

    announced: bool = False
    fired_at: float | None = None
    finding: Finding | None = None


class AlertMonitor:
    """Checks the rules every `check_seconds` on the given clock; see the module docstring."""

    def __init__(self, config: AlertsConfig, metrics: EngineMetrics,
                 receivers: Sequence[Receiver], *, clock: Any, node: str = "",
                 devices: Callable[[], DeviceSilenceProvider | None] = lambda: None) -> None:
        self._config = config
        self._metrics = metrics
        self._receivers = list(receivers)
        self._clock = clock
        self._node = node
        windows = [r.window_seconds for r in config.rules
                   if isinstance(r, ErrorCountRule | ErrorRateRule)]
        self._history = ErrorHistory(max(windows, default=0.0))
        self._evaluator = RuleEvaluator(metrics, self._history, devices)
        self._standing: dict[tuple[str, Subject], _Standing] = {}
        self._loop: task.LoopingCall | None = None
        self._sending: set[defer.Deferred[Any]] = set()

    def start(self) -> None:
        """Check every `check_seconds`, the first time one interval from now."""
        if not self._config.rules:
            return
        self._loop = task.LoopingCall(self.check)
        self._loop.clock = self._clock
        self._loop.start(self._config.check_seconds, now=False)

    def stop(self) -> None:
        """Stop checking and give up sends still under way (engine shutdown)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        for d in list(self._sending):
            d.cancel()

    def sending(self) -> defer.Deferred[Any]:
        """Fires when every notice handed to a receiver so far has been dealt with."""
        return defer.DeferredList(list(self._sending))

    def check(self) -> list[Alert]:
        """Evaluate every rule now; returns the notices sent."""
        now = self._clock.seconds()
        self._history.record(now, list(self._metrics.channels.values()))
        holding: set[tuple[str, Subject]] = set()
        notices: list[Alert] = []
        for rule in self._config.rules:
            try:
                findings = self._evaluator.findings(rule, now)
            except Exception:
                log.failure("alert rule {rule} could not be evaluated", rule=rule.name)
                continue
            for finding in findings:
                key = (rule.name, finding.subject)
                holding.add(key)
                standing = self._standing.setdefault(key, _Standing())
                standing.finding = finding
                if standing.announced:
                    continue
                if standing.fired_at is not None and \
                        now - standing.fired_at < self._cooldown(rule):
                    continue
                standing.announced, standing.fired_at = True, now
                notices.append(self._alert(rule, finding, AlertState.FIRING, now))
        rules = {r.name: r for r in self._config.rules}
        for key, standing in list(self._standing.items()):
            if key in holding:
                continue
            rule = rules[key[0]]
            if standing.announced and standing.finding is not None:
                standing.announced = False
                notices.append(self._alert(rule, standing.finding, AlertState.RESOLVED, now))
            if standing.fired_at is None or now - standing.fired_at >= self._cooldown(rule):
                del self._standing[key]
        for alert in notices:
            self._dispatch(alert)
        return notices

    def _cooldown(self, rule: Rule) -> float:
        return (rule.cooldown_seconds if rule.cooldown_seconds is not None
                else self._config.cooldown_seconds)

    def _alert(self, rule: Rule, finding: Finding, state: AlertState, now: float) -> Alert:
        return Alert(rule.name, rule.type, state, dict(finding.subject), finding.value,
                     finding.threshold, finding.summary, now, self._node)

    def _dispatch(self, alert: Alert) -> None:
        for receiver in self._receivers:
            try:
                d = receiver.send(alert)
            except Exception:
                log.failure("alert {rule}: receiver {receiver} failed", rule=alert.rule,
                            receiver=receiver.name)
                continue
            if d is None:
                continue
            self._sending.add(d)
            d.addErrback(lambda f, name=receiver.name: None if f.check(defer.CancelledError)
                         else log.error("alert {rule}: receiver {receiver} failed: {kind}",
                                        rule=alert.rule, receiver=name,
                                        kind=f.type.__name__))
            d.addBoth(lambda _, d=d: self._sending.discard(d))
