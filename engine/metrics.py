"""The engine's Prometheus metrics, on a registry of its own (never the global one).

Counts (and histogram buckets) are plain numbers on small per-channel and per-destination
objects that the hot path holds on to, changed on the reactor thread only, where the code
already has a batch in hand (the writer's commit, a queue's outcome), with no lock and no
label lookup; a collector turns them into metric families when `/metrics` is scraped.
Queue depth and the oldest waiting message come from a snapshot the engine refreshes
every few seconds on a reader thread, so a scrape never queries the store. Label values
are channel and destination names, never content.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet import defer, task
from twisted.logger import Logger

from engine.store.queue_stats import QueueStat
from engine.store.status import Status

log = Logger()

ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
               5.0, 10.0, 30.0)
"""Frame in to ACK out: milliseconds normally, seconds when the store is struggling."""
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0, 900.0, 3600.0, 14400.0)
"""Received to SENT: includes queueing and retries, so it reaches hours."""
REFRESH_SECONDS = 5.0
CONTENT_TYPE = CONTENT_TYPE_LATEST

QueueRead = Callable[[], "defer.Deferred[Mapping[tuple[str, str], QueueStat]]"]


class Timing:
    """A histogram's buckets and sum, observed on the reactor thread without a lock."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts per upper bound, `+Inf` last (the exposition's form)."""
        out, running = [], 0
        for bound, count in zip((*map(repr, map(float, self.bounds)), "+Inf"), self.counts,
                                strict=True):
            running += count
            out.append((bound, running))
        return out


class ChannelCounters:
    """One channel's counts since the engine started, and its ACK latency histogram."""

    __slots__ = ("_ack", "duplicates", "errored", "filtered", "name", "received")

    def __init__(self, name: str) -> None:
        self.name = name
        self.received = 0
        self.filtered = 0
        self.errored = 0
        self.duplicates = 0
        self._ack = Timing(ACK_BUCKETS)

    def answered(self, seconds: float) -> None:
        """A source answered a frame `seconds` after it arrived (the MLLP source's hook)."""
        self._ack.observe(seconds)


class DestinationCounters:
    """One destination's outcomes, its delivery latency, and its current failure streak.

    Implements the destination queue's monitor: `attempted` after every send attempt,
    `finished` once a final outcome (SENT or dead letter) is committed.
    """

    __slots__ = ("_channel", "_latency", "channel", "consecutive_failures", "errored",
                 "failed_attempts", "failing_since", "name", "sent")

    def __init__(self, channel: ChannelCounters, name: str) -> None:
        self.channel = channel.name
        self.name = name
        self.sent = 0
        self.errored = 0
        self.failed_attempts = 0
        self.consecutive_failures = 0
        self.failing_since: float | None = None
        self._channel = channel
        self._latency = Timing(DELIVERY_BUCKETS)

    def attempted(self, ok: bool, now: float) -> None:
        """One send attempt ended; a failure extends the streak, a success ends it."""
        if ok:
            self.consecutive_failures = 0
            self.failing_since = None
            return
        self.failed_attempts += 1
        self.consecutive_failures += 1
        if self.failing_since is None:
            self.failing_since = now

    def finished(self, status: Status, received_at_us: int, decided_at_us: int) -> None:
        """A delivery's final outcome is committed: count it (and time it when SENT)."""
        if status is Status.SENT:
            self.sent += 1
            if received_at_us:
                self._latency.observe(max(0.0, (decided_at_us - received_at_us) / 1e6))
        elif status is Status.ERROR:
            self.errored += 1
            self._channel.errored += 1


class EngineMetrics:
    """Everything `/metrics` shows for one engine; see the module docstring."""

    def __init__(self, clock: Any, *,
                 open_connections: Callable[[], Mapping[str, int]] | None = None) -> None:
        self.clock = clock
        self.started_at = clock.seconds()
        self.registry = CollectorRegistry(auto_describe=False)
        self.channels: dict[str, ChannelCounters] = {}
        self.destinations: dict[tuple[str, str], DestinationCounters] = {}
        self.queues: Mapping[tuple[str, str], QueueStat] = {}
        self.queues_read_at: float | None = None
        self.open_connections = open_connections or dict
        self._refresh_call: task.LoopingCall | None = None
        self._read_queues: QueueRead | None = None
        self.registry.register(_Collector(self))

    # -- the handles the hot path keeps ---------------------------------------------------

    def channel(self, name: str) -> ChannelCounters:
        """The counters of one channel (made on first use, then the same object)."""
        counters = self.channels.get(name)
        if counters is None:
            counters = self.channels[name] = ChannelCounters(name)
        return counters

    def destination(self, channel: str, name: str) -> DestinationCounters:
        """The counters of one destination: what its queue's monitor reports to."""
        key = (channel, name)
        counters = self.destinations.get(key)
        if counters is None:
            counters = self.destinations[key] = DestinationCounters(self.channel(channel), name)
        return counters

    def committed(self, stored: Sequence[Any], changes: Any) -> None:
        """The writer committed a batch: count arrivals, duplicates, rejects and routings."""
        current: ChannelCounters | None = None
        for message in stored:
            if current is None or current.name != message.channel:
                current = self.channel(message.channel)
            current.received += 1
            if message.duplicate_of is not None:
                current.duplicates += 1
            elif message.status is Status.ERROR:
                current.errored += 1
        for routing in changes.routings:
            if routing.status is Status.FILTERED:
                self.channel(routing.channel).filtered += 1
            elif routing.status is Status.ERROR:
                self.channel(routing.channel).errored += 1

    # -- the queue snapshot ---------------------------------------------------------------

    def start(self, read_queues: QueueRead, interval: float = REFRESH_SECONDS) -> None:
        """Refresh the queue snapshot now and every `interval` seconds on the clock."""
        self._read_queues = read_queues
        self._refresh_call = task.LoopingCall(self.refresh)
        self._refresh_call.clock = self.clock
        self._refresh_call.start(interval, now=True)

    def stop(self) -> None:
        """Stop refreshing (engine shutdown)."""
        if self._refresh_call is not None and self._refresh_call.running:
            self._refresh_call.stop()
        self._refresh_call = None

    def refresh(self) -> defer.Deferred[None]:
        """Read queue depths and ages once; a failed read keeps the previous snapshot."""
        if self._read_queues is None:
            return defer.succeed(None)

        def taken(stats: Mapping[tuple[str, str], QueueStat]) -> None:
            self.queues = stats
            self.queues_read_at = self.clock.seconds()

        def failed(failure: Any) -> None:
            log.warn("metrics: reading queue depths failed: {kind}",
                     kind=failure.type.__name__)

        d = self._read_queues()
        return d.addCallbacks(taken, failed)

    def queue(self, channel: str, destination: str) -> QueueStat:
        """The last snapshot of one destination's queue (empty when unknown)."""
        return self.queues.get((channel, destination)) or QueueStat(0, None)

    def now_us(self) -> int:
        return int(self.clock.seconds() * 1_000_000)

    # -- exposition -----------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric of this engine."""
        return bytes(generate_latest(self.registry))


class _Collector:
    """Turns the engine's plain counts and snapshots into metric families at scrape time."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        per_channel = [
            ("interlink_messages_received", "Messages stored (every frame, readable or not)",
             "received"),
            ("interlink_messages_filtered", "Messages a filter or routing declined",
             "filtered"),
            ("interlink_messages_errored", "Messages rejected, failed in the pipeline, or "
             "dead-lettered by a destination", "errored"),
            ("interlink_messages_duplicates", "Duplicates acknowledged and not routed again",
             "duplicates"),
        ]
        channels = sorted(m.channels.values(), key=lambda c: c.name)
        for name, doc, attr in per_channel:
            family = CounterMetricFamily(name, doc, labels=["channel"])
            for c in channels:
                family.add_metric([c.name], getattr(c, attr))
            yield family
        ack = HistogramMetricFamily("interlink_ack_latency_seconds",
                                    "Frame received to acknowledgment ready, per channel",
                                    labels=["channel"])
        for c in channels:
            ack.add_metric([c.name], c._ack.buckets(), c._ack.total)
        yield ack
        destinations = sorted(m.destinations.values(), key=lambda d: (d.channel, d.name))
        delivery = HistogramMetricFamily("interlink_delivery_latency_seconds",
                                         "Message received to delivery SENT, per destination",
                                         labels=["channel", "destination"])
        for d in destinations:
            delivery.add_metric([d.channel, d.name], d._latency.buckets(), d._latency.total)
        yield delivery
        per_destination = [
            ("interlink_deliveries_sent", "Deliveries a destination accepted", "sent"),
            ("interlink_deliveries_errored", "Deliveries dead-lettered after their retries",
             "errored"),
            ("interlink_delivery_attempts_failed", "Send attempts that failed (each retry)",
             "failed_attempts"),
        ]
        for name, doc, attr in per_destination:
            family = CounterMetricFamily(name, doc, labels=["channel", "destination"])
            for d in destinations:
                family.add_metric([d.channel, d.name], getattr(d, attr))
            yield family
        keys = sorted({*m.queues, *((d.channel, d.name) for d in destinations)})
        now_us = m.now_us()
        depth = GaugeMetricFamily("interlink_queue_depth", "Deliveries QUEUED (snapshot)",
                                  labels=["channel", "destination"])
        age = GaugeMetricFamily("interlink_queue_oldest_age_seconds",
                                "Age of the oldest message still QUEUED (0 when empty)",
                                labels=["channel", "destination"])
        failing = GaugeMetricFamily("interlink_destination_consecutive_failures",
                                    "Failed attempts since the last success",
                                    labels=["channel", "destination"])
        for key in keys:
            stat = m.queue(*key)
            depth.add_metric(list(key), stat.depth)
            age.add_metric(list(key), stat.oldest_age_seconds(now_us))
        for d in destinations:
            failing.add_metric([d.channel, d.name], d.consecutive_failures)
        yield depth
        yield age
        yield failing
        connections = GaugeMetricFamily("interlink_mllp_connections_open",
                                        "Open MLLP connections per listening channel",
                                        labels=["channel"])
        for channel, count in sorted(m.open_connections().items()):
            connections.add_metric([channel], count)
        yield connections
        yield GaugeMetricFamily("interlink_start_time_seconds",
                                "When this engine started (Unix time)", value=m.started_at)
        if m.queues_read_at is not None:
            yield GaugeMetricFamily("interlink_queue_snapshot_age_seconds",
                                    "Seconds since queue depths were last read",
                                    value=max(0.0, m.clock.seconds() - m.queues_read_at))


def listener_connections(port: Any) -> int:
    """Open connections of an MLLP listening port (unwrapping TLS and similar wrappers)."""
    factory = getattr(port, "factory", None)
    while factory is not None and not hasattr(factory, "open_connections"):
        factory = getattr(factory, "wrappedFactory", None)
    return int(getattr(factory, "open_connections", 0) or 0)
