"""Users and API tokens in the store: plain functions over one SQLAlchemy connection.

The caller owns the transaction, so a change and its audit event commit together
(`Store.apply_and_audit`). Password hashing happens before, outside any transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select

from engine.access.tokens import new_token, token_hash
from engine.api.routing import Role
from engine.store.access_tables import api_tokens, users

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


class AccessError(ValueError):
    """A user or token change that cannot be made; the text says why (no secrets)."""


def parse_role(text: str) -> Role:
    """viewer, operator or admin (any case)."""
    try:
        return Role[text.strip().upper()]
    except KeyError:
        raise AccessError(f"unknown role {text!r}: viewer, operator or admin") from None


def check_name(name: str, what: str = "user name") -> str:
    """A name that is safe in logs, URLs and the audit record."""
    if not isinstance(name, str) or not NAME.match(name):
        raise AccessError(f"a {what} is 1-128 letters, digits or . _ @ + - "
                          "and starts with a letter or digit")
    return name


MIN_PASSWORD = 8


def check_password(password: object) -> str:
    """A password long enough to be worth hashing (the text says why, not the password)."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccessError(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise AccessError("a password has at most 1024 characters")
    return password


@dataclass(frozen=True, slots=True)
class User:
    """A person who may log in (never the password hash outside this module)."""

    name: str
    role: Role
    created_at: int

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role.name.lower(),
                "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """Who a presented API token speaks for, with the role it may use now."""

    id: int
    user: str
    name: str
    role: Role
    last_used_at: int | None


def _user(row: Any) -> User:
    return User(row.name, Role[row.role], row.created_at)


def get_user(conn: Connection, name: str) -> User | None:
    """One user, or None."""
    row = conn.execute(select(users).where(users.c.name == name)).first()
    return _user(row) if row else None


def password_hash_of(conn: Connection, name: str) -> tuple[User, str] | None:
    """A user and their stored password hash, for checking a login."""
    row = conn.execute(select(users).where(users.c.name == name)).first()
    return (_user(row), row.password_hash) if row else None


def list_users(conn: Connection) -> list[User]:
    """Every user, by name."""
    return [_user(r) for r in conn.execute(select(users).order_by(users.c.name))]


def count_users(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(users)).scalar_one())


def add_user(conn: Connection, name: str, role: Role, password_hash: str, now: int) -> User:
    """Create a user; refuses a name that is taken."""
    check_name(name)
    if get_user(conn, name) is not None:
        raise AccessError(f"user {name} already exists")
    conn.execute(users.insert().values(name=name, role=role.name, password_hash=password_hash,
                                       created_at=now, updated_at=now))
    return User(name, role, now)


def set_password(conn: Connection, name: str, password_hash: str, now: int) -> None:
    """Replace a user's password hash (a new password, or stronger KDF parameters)."""
    changed = conn.execute(users.update().where(users.c.name == name)
                           .values(password_hash=password_hash, updated_at=now))
    if not changed.rowcount:
        raise AccessError(f"no user {name}")


def set_role(conn: Connection, name: str, role: Role, now: int) -> Role:
    """Change a user's role; returns the old one. Their tokens never exceed the new one."""
    user = get_user(conn, name)
    if user is None:
        raise AccessError(f"no user {name}")
    conn.execute(users.update().where(users.c.name == name)
                 .values(role=role.name, updated_at=now))
    return user.role


def remove_user(conn: Connection, name: str, now: int) -> int:
    """Delete a user and revoke their tokens; returns how many tokens were revoked."""
    if get_user(conn, name) is None:
        raise AccessError(f"no user {name}")
    conn.execute(users.delete().where(users.c.name == name))
    revoked = conn.execute(api_tokens.update()
                           .where(api_tokens.c.user_name == name)
                           .where(api_tokens.c.revoked_at.is_(None))
                           .values(revoked_at=now))
    return int(revoked.rowcount or 0)


def create_token(conn: Connection, user: str, name: str, role: Role | None,
                 now: int) -> tuple[dict[str, Any], str]:
    """A new API token for `user` (role defaults to theirs, never above it).

    Returns the token's public record and the token itself, which is not kept.
    """
    check_name(name, "token name")
    owner = get_user(conn, user)
    if owner is None:
        raise AccessError(f"no user {user}")
    role = owner.role if role is None else role
    if role > owner.role:
        raise AccessError(f"a token cannot have more than its owner's role "
                          f"({owner.role.name.lower()})")
    token = new_token()
    result = conn.execute(api_tokens.insert().values(
        user_name=user, name=name, role=role.name, token_hash=token_hash(token),
        created_at=now))
    token_id = int(result.inserted_primary_key[0])
    return {"id": token_id, "user": user, "name": name, "role": role.name.lower(),
            "created_at": now, "last_used_at": None, "revoked_at": None}, token


def token_record(row: Any) -> dict[str, Any]:
    return {"id": row.id, "user": row.user_name, "name": row.name,
            "role": row.role.lower(), "created_at": row.created_at,
            "last_used_at": row.last_used_at, "revoked_at": row.revoked_at}


def list_tokens(conn: Connection, user: str | None = None) -> list[dict[str, Any]]:
    """Tokens (never their secrets), of one user or of everyone."""
    query = select(api_tokens).order_by(api_tokens.c.id)
    if user is not None:
        query = query.where(api_tokens.c.user_name == user)
    return [token_record(r) for r in conn.execute(query)]


def get_token(conn: Connection, token_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
    return token_record(row) if row else None


def revoke_token(conn: Connection, token_id: int, now: int) -> None:
    """Revoke one token (revoking twice keeps the first time)."""
    conn.execute(api_tokens.update().where(api_tokens.c.id == token_id)
                 .where(api_tokens.c.revoked_at.is_(None)).values(revoked_at=now))


def find_token(conn: Connection, token: str) -> TokenGrant | None:
    """The grant of a presented token: None if unknown, revoked, or its owner is gone."""
    row = conn.execute(
        select(api_tokens.c.id, api_tokens.c.user_name, api_tokens.c.name,
               api_tokens.c.role, api_tokens.c.last_used_at, users.c.role.label("user_role"))
        .join(users, users.c.name == api_tokens.c.user_name)
        .where(api_tokens.c.token_hash == token_hash(token))
        .where(api_tokens.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    role = min(Role[row.role], Role[row.user_role])
    return TokenGrant(row.id, row.user_name, row.name, role, row.last_used_at)


def why_refused(conn: Connection, token: str) -> dict[str, str]:
    """What an audit row may say about a token `find_token` refused: never the token."""
    row = conn.execute(
        select(api_tokens.c.user_name, api_tokens.c.name, api_tokens.c.revoked_at)
        .where(api_tokens.c.token_hash == token_hash(token))
    ).first()
    if row is None:
        return {"reason": "unknown token"}
    reason = "revoked token" if row.revoked_at is not None else "token of a removed user"
    return {"reason": reason, "token": row.name, "user": row.user_name}


def touch_token(conn: Connection, token_id: int, now: int) -> None:
    """Record when a token was last used."""
    conn.execute(api_tokens.update().where(api_tokens.c.id == token_id)
                 .values(last_used_at=now))
