"""Tables of device data: readings seen (for de-duplication) and devices tracked.

``pcd_observations`` holds one row per reading a de-duplicating channel received: a hash
of (channel, patient, device, MDC code, OBX-4 path, observation time), so it carries no
PHI, and the message that carried it first. The primary key makes a reading belong to one
message even with several nodes on one PostgreSQL. Rows expire (``expires_at``) so the
table stays bounded. ``pcd_devices`` keeps what device tracking needs across a restart.
"""

from sqlalchemy import BigInteger, Column, Float, Index, String, Table, Text

from engine.store.schema import metadata

pcd_observations = Table(
    "pcd_observations",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("message_id", BigInteger, nullable=False),
    Column("seen_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)
Index("ix_pcd_observations_expires", pcd_observations.c.expires_at)

pcd_devices = Table(
    "pcd_devices",
    metadata,
    Column("channel", String(128), primary_key=True),
    Column("device", String(250), primary_key=True),
    Column("unit", String(64), nullable=False, default=""),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("silent_since", Float, nullable=True),
    Column("arrivals", Text, nullable=False, default="[]"),
    Column("gaps", Text, nullable=False, default="[]"),
)
"""One tracked device per channel: times are the engine clock's seconds."""
