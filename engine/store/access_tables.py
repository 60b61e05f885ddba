"""Tables of the admin API's users and their API tokens.

Sessions are not stored: they live in the engine's memory (see `engine.access.sessions`).
Times are integer microseconds since the Unix epoch, as in the rest of the store.
"""

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from engine.store.schema import metadata

users = Table(
    "users",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    # `scrypt$n=…,r=…,p=…$salt$hash`: the KDF's parameters travel with the hash.
    Column("password_hash", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("user_name", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    # SHA-256 of the token: the token itself is shown once and never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
)
Index("ix_api_tokens_user", api_tokens.c.user_name)
