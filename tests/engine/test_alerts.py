"""Alert rules on a task.Clock: each fires once, keeps its cool-down, and resolves.

Counts reach the metrics the way the engine's hooks deliver them (the writer's committed
batches, a queue monitor's attempts), so a rule sees what it would see in production.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from pydantic import ValidationError
from twisted.internet import task
from twisted.trial.unittest import TestCase

from engine.alerts.alert import AlertState
from engine.alerts.config import AlertsConfig
from engine.alerts.devices import SilentDevice
from engine.alerts.monitor import AlertMonitor
from engine.alerts.receivers import AlertConfigError, LogReceiver, build_receivers
from engine.metrics import EngineMetrics
from engine.store.deliveries import Routing
from engine.store.queue_stats import QueueStat
from engine.store.status import Status
from engine.store.store import StoredMessage
from engine.writer import Changes
from tests.engine.alert_recorder import Recorder


class Tracker:
    """A device tracker as the device-silence rule sees one."""

    def __init__(self) -> None:
        self.silent: list[SilentDevice] = []

    def silent_devices(self, now: float) -> Iterable[SilentDevice]:
        return list(self.silent)


def commit(metrics: EngineMetrics, channel: str, *, ok: int = 0, rejected: int = 0,
           duplicates: int = 0, routed_errors: int = 0, filtered: int = 0) -> None:
    """What the writer reports after one committed batch."""
    stored = [StoredMessage(i, channel, Status.RECEIVED, None) for i in range(ok)]
    stored += [StoredMessage(i, channel, Status.ERROR, None) for i in range(rejected)]
    stored += [StoredMessage(i, channel, Status.FILTERED, 1) for i in range(duplicates)]
    routings = [Routing(i, channel, Status.ERROR) for i in range(routed_errors)]
    routings += [Routing(i, channel, Status.FILTERED) for i in range(filtered)]
    metrics.committed(stored, Changes(routings=routings))


def monitor(rules: list[dict[str, Any]], clock: task.Clock, metrics: EngineMetrics,
            recorder: Recorder, *, cooldown: float = 300.0, devices: Any = None
            ) -> AlertMonitor:
    config = AlertsConfig.model_validate(
        {"check_seconds": 10, "cooldown_seconds": cooldown, "rules": rules})
    return AlertMonitor(config, metrics, [LogReceiver(), recorder], clock=clock,
                        node="node-1", devices=lambda: devices)


class CountingTests(TestCase):
    """The writer hook's counts are what the channels list and the rules read."""

    def test_committed_batch_counts_by_kind(self) -> None:
        """Arrivals, rejects, duplicates, pipeline errors and filtered routings counted apart."""
        metrics = EngineMetrics(task.Clock())
        commit(metrics, "in", ok=4, rejected=1, duplicates=2, routed_errors=1, filtered=3)
        c = metrics.channel("in")
        self.assertEqual((c.received, c.errored, c.duplicates, c.filtered), (7, 2, 2, 3))

    def test_dead_letter_counts_for_destination_and_channel(self) -> None:
        """A final ERROR counts against the destination and its channel; SENT is timed."""
        clock = task.Clock()
        metrics = EngineMetrics(clock)
        dest = metrics.destination("in", "ehr")
        dest.finished(Status.SENT, 1_000_000, 3_500_000)
        dest.finished(Status.ERROR, 1_000_000, 9_000_000)
        self.assertEqual((dest.sent, dest.errored, metrics.channel("in").errored), (1, 1, 1))
        text = metrics.exposition().decode()
        self.assertIn('interlink_delivery_latency_seconds_bucket{channel="in",'
                      'destination="ehr",le="1.0"} 0.0', text)
        self.assertIn('interlink_delivery_latency_seconds_bucket{channel="in",'
                      'destination="ehr",le="2.5"} 1.0', text)


class RuleTests(TestCase):
    """Every rule type through the monitor, on a clock the test moves."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.metrics = EngineMetrics(self.clock)
        self.recorder = Recorder()

    def test_error_count_fires_once_and_resolves_when_the_window_passes(self) -> None:
        """Three errors in 60 s fire once; more checks stay quiet; the window passing resolves."""
        m = monitor([{"name": "errs", "type": "error_count", "channel": "in",
                      "threshold": 3, "window_seconds": 60}], self.clock, self.metrics,
                    self.recorder)
        commit(self.metrics, "in", ok=10, rejected=2)
        m.check()
        self.assertEqual(self.recorder.alerts, [])
        commit(self.metrics, "in", rejected=1)
        self.clock.advance(10)
        m.check()
        self.clock.advance(10)
        m.check()
        self.assertEqual(self.recorder.states(), [("errs", "firing")])
        alert = self.recorder.alerts[0]
        self.assertEqual((alert.subject, alert.value, alert.threshold),
                         ({"channel": "in"}, 3, 3))
        self.clock.advance(61)
        m.check()
        self.assertEqual(self.recorder.states(), [("errs", "firing"), ("errs", "resolved")])

    def test_flapping_condition_respects_the_cooldown(self) -> None:
        """Back within the cool-down: silent, no second resolve; still true after it: fires."""
        m = monitor([{"name": "ehr-down", "type": "destination_unreachable",
                      "failures": 2}], self.clock, self.metrics, self.recorder,
                    cooldown=100)
        dest = self.metrics.destination("in", "ehr")
        for ok in (False, False):
            dest.attempted(ok, self.clock.seconds())
        m.check()
        dest.attempted(True, self.clock.seconds())
        self.clock.advance(10)
        m.check()
        self.assertEqual(self.recorder.states(),
                         [("ehr-down", "firing"), ("ehr-down", "resolved")])
        for _ in range(3):  # flaps within the cool-down: nothing is sent
            dest.attempted(False, self.clock.seconds())
            dest.attempted(False, self.clock.seconds())
            self.clock.advance(10)
            m.check()
            dest.attempted(True, self.clock.seconds())
            self.clock.advance(10)
            m.check()
        self.assertEqual(len(self.recorder.alerts), 2)
        dest.attempted(False, self.clock.seconds())
        dest.attempted(False, self.clock.seconds())
        self.clock.advance(50)
        m.check()
        self.assertEqual(self.recorder.states()[2:], [("ehr-down", "firing")])

    def test_unreachable_waits_for_its_duration(self) -> None:
        """`for_seconds`: a streak of failures must also have lasted that long."""
        m = monitor([{"name": "down", "type": "destination_unreachable", "failures": 3,
                      "for_seconds": 30}], self.clock, self.metrics, self.recorder)
        dest = self.metrics.destination("in", "ehr")
        for _ in range(3):
            dest.attempted(False, self.clock.seconds())
            self.clock.advance(5)
        m.check()
        self.assertEqual(self.recorder.alerts, [])
        self.clock.advance(20)
        m.check()
        self.assertEqual(self.recorder.states(), [("down", "firing")])
        self.assertEqual(self.recorder.alerts[0].subject,
                         {"channel": "in", "destination": "ehr"})

    def test_queue_depth_and_age_from_the_snapshot(self) -> None:
        """Depth and oldest age per destination, each its own subject; an empty queue resolves."""
        m = monitor([{"name": "deep", "type": "queue_depth", "threshold": 100},
                     {"name": "old", "type": "queue_age", "destination": "ehr",
                      "threshold_seconds": 600}], self.clock, self.metrics, self.recorder)
        now_us = int(self.clock.seconds() * 1e6)
        self.metrics.queues = {("in", "ehr"): QueueStat(150, now_us - 700_000_000),
                               ("in", "archive"): QueueStat(120, now_us - 1_000_000)}
        m.check()
        fired = sorted((a.rule, a.subject["destination"]) for a in self.recorder.alerts)
        self.assertEqual(fired, [("deep", "archive"), ("deep", "ehr"), ("old", "ehr")])
        self.metrics.queues = {("in", "ehr"): QueueStat(0, None)}
        self.clock.advance(10)
        m.check()
        resolved = [a for a in self.recorder.alerts if a.state is AlertState.RESOLVED]
        self.assertEqual(len(resolved), 3)

    def test_error_rate_needs_enough_messages(self) -> None:
        """Half the messages errored, but fewer than min_messages: quiet; more: fires."""
        m = monitor([{"name": "rate", "type": "error_rate", "threshold": 0.5,
                      "window_seconds": 300, "min_messages": 10}], self.clock,
                    self.metrics, self.recorder)
        commit(self.metrics, "in", ok=2, rejected=2)
        m.check()
        self.assertEqual(self.recorder.alerts, [])
        commit(self.metrics, "in", ok=3, rejected=3)
        self.clock.advance(10)
        m.check()
        self.assertEqual(self.recorder.states(), [("rate", "firing")])
        self.assertEqual(self.recorder.alerts[0].value, 0.5)

    def test_device_silence_reads_the_provider(self) -> None:
        """No tracker: nothing. A tracker's silent device past the minimum: fires, then resolves."""
        quiet = monitor([{"name": "quiet", "type": "device_silence",
                          "min_silence_seconds": 120}], self.clock, self.metrics,
                        self.recorder)
        quiet.check()
        tracker = Tracker()
        m = monitor([{"name": "quiet", "type": "device_silence",
                      "min_silence_seconds": 120}], self.clock, self.metrics, self.recorder,
                    devices=tracker)
        tracker.silent = [SilentDevice("MON-7", 60.0, 30.0)]
        m.check()
        self.assertEqual(self.recorder.alerts, [])
        tracker.silent = [SilentDevice("MON-7", 180.0, 30.0)]
        m.check()
        tracker.silent = []
        m.check()
        self.assertEqual(self.recorder.states(), [("quiet", "firing"), ("quiet", "resolved")])
        self.assertEqual(self.recorder.alerts[0].subject, {"device": "MON-7"})

    def test_loop_checks_on_the_clock(self) -> None:
        """Started, the monitor checks every check_seconds; stopped, it does not."""
        m = monitor([{"name": "deep", "type": "queue_depth", "threshold": 1}], self.clock,
                    self.metrics, self.recorder)
        self.metrics.queues = {("in", "ehr"): QueueStat(5, None)}
        m.start()
        self.clock.advance(9)
        self.assertEqual(self.recorder.alerts, [])
        self.clock.advance(1)
        self.assertEqual(self.recorder.states(), [("deep", "firing")])
        m.stop()
        self.metrics.queues = {}
        self.clock.advance(100)
        self.assertEqual(len(self.recorder.alerts), 1)

    def test_alert_json_has_names_and_numbers(self) -> None:
        """The webhook body: rule, state, subject, numbers, time; nothing else."""
        m = monitor([{"name": "deep", "type": "queue_depth", "threshold": 1}], self.clock,
                    self.metrics, self.recorder)
        self.metrics.queues = {("in", "ehr"): QueueStat(5, None)}
        m.check()
        body = self.recorder.alerts[0].as_json()
        self.assertEqual(set(body), {"rule", "type", "state", "subject", "value",
                                     "threshold", "summary", "node", "at"})
        self.assertEqual((body["state"], body["value"], body["node"]), ("firing", 5, "node-1"))


def test_rule_names_must_be_unique_and_types_known() -> None:
    """A duplicate rule name or an unknown type is a configuration error."""
    with pytest.raises(ValidationError, match="two alert rules are named a"):
        AlertsConfig.model_validate({"rules": [
            {"name": "a", "type": "queue_depth", "threshold": 1},
            {"name": "a", "type": "queue_age", "threshold_seconds": 1}]})
    with pytest.raises(ValidationError):
        AlertsConfig.model_validate({"rules": [{"name": "b", "type": "cpu", "threshold": 1}]})


def test_unresolvable_secret_names_the_reference_not_a_value() -> None:
    """A missing ${env:...} stops the start and says which one."""
    config = AlertsConfig.model_validate({"webhooks": [
        {"url": "https://hooks.example/x", "headers": {"Authorization": "${env:NO_SUCH}"}}]})
    with pytest.raises(AlertConfigError, match="NO_SUCH is not set"):
        build_receivers(config, task.Clock(), environ={})
