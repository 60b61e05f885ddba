"""Table definitions for the store, portable between SQLite and PostgreSQL.

Times are integer microseconds since the Unix epoch (UTC): exact, sortable and identical
on every backend, and cheap to write on the ingest hot path.
"""

import importlib
import pkgutil

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Sequence,
    String,
    Table,
    Text,
)

metadata = MetaData()

message_ids = Sequence("message_ids", metadata=metadata)
"""Message ids on PostgreSQL, where several processes write (SQLite counts in memory)."""

messages = Table(
    "messages",
    metadata,
    # On SQLite an INTEGER PRIMARY KEY is the row id itself: no separate unique index to
    # keep up on every insert, and a lookup by id goes straight to the row. (Stores made
    # before this keep their BIGINT key and its index; both read and write alike.)
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=False),
    Column("channel", String(128), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("peer", String(128), nullable=False, default=""),
    Column("control_id", String(199), nullable=False, default=""),
    Column("message_type", String(64), nullable=False, default=""),
    Column("version", String(16), nullable=False, default=""),
    Column("sending_application", String(227), nullable=False, default=""),
    Column("sending_facility", String(227), nullable=False, default=""),
    Column("patient_id", String(250), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("ack_code", String(2), nullable=False, default=""),
    Column("duplicate_of", BigInteger, nullable=True),
    Column("parent_id", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_messages_channel_received", messages.c.channel, messages.c.received_at)
Index("ix_messages_control_id", messages.c.control_id)
Index("ix_messages_status", messages.c.status)
Index("ix_messages_patient_id", messages.c.patient_id)

contents = Table(
    "contents",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("message_id", BigInteger, ForeignKey("messages.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("destination", String(128), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
)
Index("ix_contents_message", contents.c.message_id, contents.c.kind)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("message_id", BigInteger, ForeignKey("messages.id"), nullable=False),
    Column("channel", String(128), nullable=False),
    Column("destination", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("lane_key", String(250), nullable=False, default=""),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("first_attempt_at", BigInteger, nullable=True),
    Column("held", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)
Index("ix_deliveries_queue", deliveries.c.destination, deliveries.c.channel,
      deliveries.c.status, deliveries.c.id)
Index("ix_deliveries_message", deliveries.c.message_id)

lane_leases = Table(
    "lane_leases",
    metadata,
    Column("destination", String(128), primary_key=True),
    Column("lane_key", String(250), primary_key=True),
    Column("node", String(128), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)
"""Which node delivers an ordered lane right now (several nodes on one PostgreSQL)."""

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("message_id", BigInteger, nullable=True),
    Column("channel", String(128), nullable=True),
    Column("detail", Text, nullable=False, default="{}"),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("ix_audit_message", audit_events.c.message_id)


def all_tables() -> MetaData:
    """The metadata with every table, also those declared in `engine/store/*_tables.py`.

    A feature that needs tables of its own declares them on `metadata` in such a module;
    the store creates them with the rest.
    """
    import engine.store

    for info in pkgutil.iter_modules(engine.store.__path__):
        if info.name.endswith("_tables"):
            importlib.import_module(f"engine.store.{info.name}")
    return metadata
