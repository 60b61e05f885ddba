"""The states a message or a delivery can be in (promise 2: nothing silently dropped)."""

from enum import StrEnum


class Status(StrEnum):
    """Where a message stands; every message ends in one of the visible end states."""

    RECEIVED = "RECEIVED"
    """Committed to the store, not yet routed to its destinations."""
    QUEUED = "QUEUED"
    """Waiting in at least one destination queue."""
    SENT = "SENT"
    """Every destination that accepted it has delivered it."""
    FILTERED = "FILTERED"
    """Deliberately not delivered (filter, duplicate, no destination); kept and countable."""
    ERROR = "ERROR"
    """Rejected at the door or dead-lettered; kept as received and reprocessable."""


class ContentKind(StrEnum):
    """Which payload of a message a `contents` row holds."""

    RAW = "raw"
    ACK = "ack"
    TRANSFORMED = "transformed"
    ENCODED = "encoded"
    SENT = "sent"
    RESPONSE = "response"
