"""Evaluating alert rules against the engine's metrics: each rule gives its findings now.

A finding is one subject (a channel, a destination, a device) whose condition holds, with
the number that tripped it. Error windows come from samples of the channels' counters
taken at every check, so no rule queries the store.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.alerts.config import (
    DeviceSilenceRule,
    ErrorCountRule,
    ErrorRateRule,
    QueueAgeRule,
    QueueDepthRule,
    Rule,
    UnreachableRule,
)
from engine.alerts.devices import DeviceSilenceProvider
from engine.metrics import ChannelCounters, EngineMetrics

Subject = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Finding:
    """One subject whose condition holds, and the value that tripped it."""

    subject: Subject
    value: float
    threshold: float
    summary: str


class ErrorHistory:
    """Samples of each channel's (errored, received) counts, to measure them over a window.

    Counts start at zero when the engine starts, so a window reaching back before the
    first sample is measured from zero.
    """

    def __init__(self, keep_seconds: float) -> None:
        self._keep = keep_seconds
        self._samples: dict[str, deque[tuple[float, int, int]]] = {}

    def record(self, now: float, channels: Iterable[ChannelCounters]) -> None:
        """Take one sample of every channel at `now`."""
        for c in channels:
            samples = self._samples.setdefault(c.name, deque())
            samples.append((now, c.errored, c.received))
            # Keep the newest sample at or before the longest window's start, drop older.
            while len(samples) >= 2 and samples[1][0] <= now - self._keep:
                samples.popleft()

    def within(self, channel: str, now: float, window: float) -> tuple[int, int]:
        """(errored, received) of one channel in the last `window` seconds."""
        samples = self._samples.get(channel)
        if not samples:
            return 0, 0
        start = now - window
        base = (0.0, 0, 0)
        for sample in samples:
            if sample[0] > start:
                break
            base = sample
        last = samples[-1]
        return last[1] - base[1], last[2] - base[2]


def _wanted(value: str, wanted: str | None) -> bool:
    return wanted is None or value == wanted


class RuleEvaluator:
    """Findings of every rule type, from the metrics, the error history and the devices."""

    def __init__(self, metrics: EngineMetrics, history: ErrorHistory,
                 devices: Callable[[], DeviceSilenceProvider | None]) -> None:
        self._m = metrics
        self._history = history
        self._devices = devices

    def findings(self, rule: Rule, now: float) -> list[Finding]:
        """The subjects for which `rule` holds at `now`."""
        if isinstance(rule, ErrorCountRule):
            return self._error_count(rule, now)
        if isinstance(rule, ErrorRateRule):
            return self._error_rate(rule, now)
        if isinstance(rule, QueueDepthRule | QueueAgeRule):
            return self._queues(rule, now)
        if isinstance(rule, UnreachableRule):
            return self._unreachable(rule, now)
        if isinstance(rule, DeviceSilenceRule):
            return self._silence(rule, now)
        raise TypeError(f"no evaluation for {type(rule).__name__}")

    def _channels(self, wanted: str | None) -> list[str]:
        return sorted(n for n in self._m.channels if _wanted(n, wanted))

    def _error_count(self, rule: ErrorCountRule, now: float) -> list[Finding]:
        out = []
        for name in self._channels(rule.channel):
            errored, _ = self._history.within(name, now, rule.window_seconds)
            if errored >= rule.threshold:
                out.append(Finding(
                    (("channel", name),), errored, rule.threshold,
                    f"channel {name}: {errored} errored messages in the last "
                    f"{rule.window_seconds:g} s (threshold {rule.threshold})"))
        return out

    def _error_rate(self, rule: ErrorRateRule, now: float) -> list[Finding]:
        out = []
        for name in self._channels(rule.channel):
            errored, received = self._history.within(name, now, rule.window_seconds)
            if received < rule.min_messages:
                continue
            rate = errored / received
            if rate >= rule.threshold:
                out.append(Finding(
                    (("channel", name),), round(rate, 4), rule.threshold,
                    f"channel {name}: {errored} of {received} messages errored in the last "
                    f"{rule.window_seconds:g} s ({rate:.0%}, threshold {rule.threshold:.0%})"))
        return out

    def _destinations(self, channel: str | None, destination: str | None
                      ) -> list[tuple[str, str]]:
        keys = {*self._m.queues, *self._m.destinations}
        return sorted(k for k in keys
                      if _wanted(k[0], channel) and _wanted(k[1], destination))

    def _queues(self, rule: QueueDepthRule | QueueAgeRule, now: float) -> list[Finding]:
        out = []
        now_us = int(now * 1_000_000)
        for channel, destination in self._destinations(rule.channel, rule.destination):
            stat = self._m.queue(channel, destination)
            subject = (("channel", channel), ("destination", destination))
            if isinstance(rule, QueueDepthRule):
                if stat.depth >= rule.threshold:
                    out.append(Finding(subject, stat.depth, rule.threshold,
                                       f"{channel}/{destination}: {stat.depth} deliveries "
                                       f"queued (threshold {rule.threshold})"))
                continue
            age = stat.oldest_age_seconds(now_us)
            if stat.depth and age >= rule.threshold_seconds:
                out.append(Finding(subject, round(age, 1), rule.threshold_seconds,
                                   f"{channel}/{destination}: oldest queued message waited "
                                   f"{age:.0f} s (threshold {rule.threshold_seconds:g} s)"))
        return out

    def _unreachable(self, rule: UnreachableRule, now: float) -> list[Finding]:
        out = []
        for (channel, destination), d in sorted(self._m.destinations.items()):
            if not (_wanted(channel, rule.channel) and _wanted(destination, rule.destination)):
                continue
            if d.failing_since is None or d.consecutive_failures < rule.failures:
                continue
            failing_for = now - d.failing_since
            if failing_for >= rule.for_seconds:
                out.append(Finding(
                    (("channel", channel), ("destination", destination)),
                    d.consecutive_failures, rule.failures,
                    f"{channel}/{destination}: {d.consecutive_failures} attempts in a row "
                    f"failed over {failing_for:.0f} s"))
        return out

    def _silence(self, rule: DeviceSilenceRule, now: float) -> list[Finding]:
        provider = self._devices()
        if provider is None:
            return []
        out = []
        for device in provider.silent_devices(now):
            if device.channel is not None and not _wanted(device.channel, rule.channel):
                continue
            if device.silent_seconds < rule.min_silence_seconds:
                continue
            expected = (f", expected every {device.expected_interval_seconds:g} s"
                        if device.expected_interval_seconds else "")
            out.append(Finding((("device", device.device),), round(device.silent_seconds, 1),
                               rule.min_silence_seconds,
                               f"device {device.device}: silent for "
                               f"{device.silent_seconds:.0f} s{expected}"))
        return out
