"""JSON-lines log records: ids as fields, failures by type, never an exception's text."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from engine.logs import json_lines_observer, json_record


def test_ids_become_fields_and_the_text_is_formatted() -> None:
    """Message id, channel and destination of the event are fields of the line."""
    out = io.StringIO()
    log = Logger(namespace="engine.delivery.queue", observer=json_lines_observer(out))
    log.warn("queue {channel}/{destination}: message {id} dead-lettered", channel="in",
             destination="ehr", id=42)
    record = json.loads(out.getvalue())
    assert record["event"] == "queue in/ehr: message 42 dead-lettered"
    assert (record["level"], record["namespace"]) == ("warn", "engine.delivery.queue")
    assert (record["message_id"], record["channel"], record["destination"]) == (42, "in", "ehr")
    assert record["time"].endswith("+00:00")


def test_failure_is_named_by_type_only() -> None:
    """An exception's text may quote content: only its type reaches the line."""
    try:
        raise ValueError("PID|||MRN123^^^GH||DOE^JANE")
    except ValueError:
        failure = Failure()
    record = json_record({"log_level": LogLevel.critical, "log_time": 0.0,
                          "log_namespace": "x", "log_format": "store commit failed",
                          "log_failure": failure})
    assert record["error"] == "ValueError"
    assert "DOE" not in json.dumps(record)
