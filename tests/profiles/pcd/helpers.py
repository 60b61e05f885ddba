"""Shared helpers for the PCD tests: corpus reports and fixed UTC offsets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from profiles.pcd.extract import extract
from profiles.pcd.records import DeviceReport, Metric
from tests.profiles.corpus import read


def report(relative: str, **options: object) -> DeviceReport:
    """The extraction of one corpus file, read in place."""
    return extract(read(relative), **options)  # type: ignore[arg-type]


def at(text: str, offset_hours: float = 0) -> datetime:
    """``'2011-06-02 04:58:42'`` at a fixed UTC offset (hours)."""
    zone = UTC if not offset_hours else timezone(timedelta(hours=offset_hours))
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def only(r: DeviceReport, key: str) -> Metric:
    """The metric named ``key``; fails when it is missing."""
    metric = r.metric(key)
    assert metric is not None, f"{key} not extracted"
    return metric
