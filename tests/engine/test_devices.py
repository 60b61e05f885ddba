"""Device tracking on task.Clock: silence (alerted once), completeness, learned intervals,
persistence across a restart; the readings ledger on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from twisted.internet import task

from channels.pcd import DeviceTrackingConfig, Sighting
from engine.alerts.alert import AlertState
from engine.alerts.config import AlertsConfig
from engine.alerts.monitor import AlertMonitor
from engine.devices.observations import ObservationLedger
from engine.devices.persist import DeviceRows
from engine.devices.tracker import DeviceTracker
from engine.metrics import EngineMetrics
from engine.store.store import open_store, sqlite_url
from tests.engine.alert_recorder import Recorder

MONITOR = Sighting("EUI-64:0123456789ABCDEF", "ICU-3")
PUMP = Sighting("EUI-64:00122100000000AA", "ICU-3")


def settings(**values: Any) -> Any:
    config = DeviceTrackingConfig(**values)
    return lambda channel: config if channel == "monitors" else None


def report_every(clock: task.Clock, tracker: DeviceTracker, seconds: float, times: int,
                 *sightings: Sighting) -> None:
    for _ in range(times):
        tracker.sighted("monitors", sightings)
        clock.advance(seconds)


def test_a_device_that_stops_reporting_is_alerted_once_and_completeness_falls() -> None:
    """Every 10 s for 100 s, then nothing: silent after 3 intervals, one firing alert
    through the alerts engine, a resolved notice when it reports again."""
    clock = task.Clock()
    clock.advance(1_000_000)
    tracker = DeviceTracker(clock, settings(expected_interval_seconds=10, silent_after=3))
    recorder = Recorder()
    alerts = AlertsConfig.model_validate({
        "check_seconds": 5, "cooldown_seconds": 0,
        "rules": [{"name": "monitors-quiet", "type": "device_silence"}]})
    monitor = AlertMonitor(alerts, EngineMetrics(clock), [recorder], clock=clock,
                           devices=lambda: tracker)
    monitor.start()
    for _ in range(11):  # readings at t = 0, 10, ..., 100
        tracker.sighted("monitors", [MONITOR])
        tracker.check()
        clock.advance(5)
        tracker.check()
        clock.advance(5)
    [device] = tracker.devices()
    assert tracker.describe(device, device.last_seen)["completeness"] == 1.0
    assert recorder.alerts == []
    newly: list[Any] = []
    for _ in range(12):  # 60 s of silence, checked every 5 s
        newly += tracker.check()
        clock.advance(5)
    assert [d.device for d in newly] == [MONITOR.device]
    shown = tracker.describe(device, clock.seconds())
    assert shown["state"] == "silent"
    assert shown["received"] == 11
    assert shown["completeness"] < 0.62  # 11 of 18 expected readings
    firing = [a for a in recorder.alerts if a.state is AlertState.FIRING]
    assert len(firing) == 1
    assert firing[0].subject == {"device": MONITOR.device}
    assert firing[0].type == "device_silence"
    tracker.sighted("monitors", [MONITOR])
    clock.advance(5)
    assert [a.state for a in recorder.alerts] == [AlertState.FIRING, AlertState.RESOLVED]
    assert tracker.describe(device, clock.seconds())["state"] == "reporting"
    monitor.stop()


def test_the_interval_is_learned_when_not_configured() -> None:
    """Without a configured interval the median of recent gaps is used, after three."""
    clock = task.Clock()
    tracker = DeviceTracker(clock, settings(silent_after=2))
    report_every(clock, tracker, 30, 3, MONITOR)
    [device] = tracker.devices()
    assert tracker.interval(device) == (None, "learning")
    assert tracker.describe(device, clock.seconds())["state"] == "learning"
    report_every(clock, tracker, 30, 2, MONITOR)
    assert tracker.interval(device) == (30, "learned")
    clock.advance(30)  # 60 s since the last reading: not yet more than 2 intervals
    assert tracker.check() == []
    clock.advance(1)
    assert [d.device for d in tracker.check()] == [MONITOR.device]
    assert tracker.check() == []  # once


def test_completeness_per_unit_counts_every_device_of_the_unit() -> None:
    """Two devices in one unit: one complete, one sending every other reading."""
    clock = task.Clock()
    tracker = DeviceTracker(clock, settings(expected_interval_seconds=10))
    for n in range(11):
        tracker.sighted("monitors", [MONITOR, PUMP] if n % 2 == 0 else [MONITOR])
        clock.advance(10)
    [unit] = tracker.units(clock.seconds() - 10)
    assert unit["unit"] == "ICU-3" and unit["devices"] == 2
    assert unit["received"] == 11 + 6
    assert 0.75 < unit["completeness"] < 0.8  # 17 of 22


def test_devices_survive_a_restart(tmp_path: Path) -> None:
    """Saved rows bring back last seen, gaps and state: silence is noticed after a restart."""
    store = open_store(sqlite_url(tmp_path))
    try:
        rows = DeviceRows(store.engine)
        clock = task.Clock()
        tracker = DeviceTracker(clock, settings(silent_after=3))
        report_every(clock, tracker, 10, 5, MONITOR)
        rows.save(tracker.changed_rows())
        assert tracker.changed_rows() == []
        later = task.Clock()
        later.advance(clock.seconds() + 100)
        restarted = DeviceTracker(later, settings(silent_after=3))
        assert restarted.load(rows.load()) == 1
        [device] = restarted.devices()
        assert device.unit == "ICU-3" and len(device.arrivals) == 5
        assert restarted.interval(device) == (10, "learned")
        assert [d.device for d in restarted.check()] == [MONITOR.device]
        rows.save(restarted.changed_rows())
        assert rows.load()[0]["state"] == "silent"
    finally:
        store.close()


def ledger_claims_once_each(url: str) -> None:
    store = open_store(url)
    try:
        ledger = ObservationLedger(store.engine)
        assert ledger.claim([(1, ["a", "b"], 60), (2, ["b", "c"], 60)], 1_000_000) == {
            2: {"b": 1}}
        # routed again (crash, reprocess): a message keeps its own readings
        assert ledger.claim([(1, ["a", "b"], 60)], 2_000_000) == {}
        assert ledger.claim([(3, ["a", "c", "d"], 60)], 3_000_000) == {3: {"a": 1, "c": 2}}
        # past the window a reading is new again, and expiry empties the table
        assert ledger.claim([(4, ["a"], 60)], 62_000_000) == {}
        assert ledger.count() == 4
        assert ledger.expire(200_000_000) == 4
        assert ledger.count() == 0
    finally:
        store.close()


def test_the_ledger_gives_each_reading_to_one_message(store_url: str) -> None:
    """The first message to carry a reading owns it, on SQLite and on PostgreSQL."""
    ledger_claims_once_each(store_url)


def test_two_nodes_racing_for_the_same_readings_never_both_win(postgres_url: str) -> None:
    """Two stores (two nodes) claim the same keys at once on PostgreSQL: each key ends up
    owned by exactly one message, and the loser learns which."""
    stores = [open_store(postgres_url), open_store(postgres_url)]
    try:
        ledgers = [ObservationLedger(s.engine) for s in stores]
        keys = [f"k{n:04d}" for n in range(400)]
        results: dict[int, dict[int, dict[str, int]]] = {}
        barrier = threading.Barrier(2)

        def node(index: int) -> None:
            barrier.wait()
            mine = keys if index == 0 else list(reversed(keys))
            results[index] = ledgers[index].claim([(100 + index, mine, 600)], 1_000_000)

        threads = [threading.Thread(target=node, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        lost = [results[0].get(100, {}), results[1].get(101, {})]
        assert len(lost[0]) + len(lost[1]) == len(keys)
        for index, losses in enumerate(lost):
            winner = 101 - index
            assert set(losses.values()) <= {winner}
        assert ledgers[0].count() == len(keys)
    finally:
        for s in stores:
            s.close()
