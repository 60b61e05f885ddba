"""HL7 v2 knowledge: header reading, lazy field access, acknowledgments, batches.

Nothing here does I/O or imports the rest of Interlink; see each module for its one job.
"""

from profiles.hl7.acceptance import check_acceptance, suggested_outcome
from profiles.hl7.ack import (
    AckOutcome,
    ErrorDetail,
    ack_code,
    build_ack,
    build_reject_for_unreadable,
)
from profiles.hl7.batch import BatchError, is_batch, split_batch
from profiles.hl7.delimiters import DEFAULT_DELIMITERS, Delimiters
from profiles.hl7.escape import escape, unescape
from profiles.hl7.header import HD, Header, HeaderError, read_header
from profiles.hl7.message import Message, Segment
from profiles.hl7.path import Path, PathError

__all__ = [
    "DEFAULT_DELIMITERS",
    "HD",
    "AckOutcome",
    "BatchError",
    "Delimiters",
    "ErrorDetail",
    "Header",
    "HeaderError",
    "Message",
    "Path",
    "PathError",
    "Segment",
    "ack_code",
    "build_ack",
    "build_reject_for_unreadable",
    "check_acceptance",
    "escape",
    "is_batch",
    "read_header",
    "split_batch",
    "suggested_outcome",
    "unescape",
]
