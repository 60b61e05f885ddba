"""JSON-lines logging (`log_format: json`): one object per line, ids as fields.

Each line has `time`, `level`, `namespace` and `event` (the formatted text, which by the
code's own rule names ids and sizes, never content), plus the ids found in the event —
message id, channel, destination, peer, rule — as separate fields a log shipper can
index. A failure is named by its exception type only: an exception's text or traceback
may quote message content (promise 6).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import formatEvent

ID_FIELDS: dict[str, str] = {
    "id": "message_id",
    "message_id": "message_id",
    "channel": "channel",
    "destination": "destination",
    "peer": "peer",
    "rule": "rule",
    "device": "device",
    "alert_state": "alert_state",
}
"""Event keys copied onto the line (as the name on the right) when they hold a scalar."""


def json_record(event: dict[str, Any]) -> dict[str, Any]:
    """The JSON object for one Twisted log event."""
    level = event.get("log_level")
    when = event.get("log_time")
    record: dict[str, Any] = {
        "time": (datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
                 if isinstance(when, int | float) else None),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "event": formatEvent(event),
    }
    for key, name in ID_FIELDS.items():
        value = event.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            record.setdefault(name, value)
    failure = event.get("log_failure")
    if failure is not None:
        record["error"] = getattr(getattr(failure, "type", None), "__name__", "error")
    return record


def json_lines_observer(out: IO[str]) -> Callable[[dict[str, Any]], None]:
    """A log observer writing one JSON object per line to `out`."""

    def observe(event: dict[str, Any]) -> None:
        out.write(json.dumps(json_record(event), default=str) + "\n")
        out.flush()

    return observe
