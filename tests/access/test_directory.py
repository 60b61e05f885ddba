"""Users and API tokens in a real store (SQLite file and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from engine.access import directory as d
from engine.access.tokens import token_hash
from engine.api.routing import Role
from engine.audit import AuditEvent
from engine.store.access_tables import api_tokens
from engine.store.schema import audit_events
from engine.store.store import Store, open_store


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def audited(action: str, **detail: object) -> list[AuditEvent]:
    return [AuditEvent(1, "cli:test", action, detail=dict(detail))]


def test_user_change_and_its_audit_event_commit_together(store: Store) -> None:
    """A user added through apply_and_audit is in the table and on the chain."""
    user = store.apply_and_audit(lambda c: (
        d.add_user(c, "ada", Role.ADMIN, "scrypt$x", 1), audited("user.added", user="ada")))
    assert user.name == "ada"
    with store.engine.connect() as conn:
        assert [u.name for u in d.list_users(conn)] == ["ada"]
        assert conn.execute(select(audit_events.c.action)).scalars().all() == ["user.added"]
    assert store.verify_audit() == (1, None)


def test_a_refused_change_leaves_no_trace(store: Store) -> None:
    """A duplicate name fails, and neither the user nor an audit event is written."""
    store.apply_and_audit(lambda c: (d.add_user(c, "ada", Role.ADMIN, "h", 1), []))
    with pytest.raises(d.AccessError, match="already exists"):
        store.apply_and_audit(lambda c: (d.add_user(c, "ada", Role.VIEWER, "h", 2),
                                         audited("user.added")))
    with store.engine.connect() as conn:
        assert conn.execute(select(audit_events)).all() == []
        assert d.get_user(conn, "ada").role is Role.ADMIN  # type: ignore[union-attr]


def test_tokens_are_stored_hashed_limited_by_owner_and_revocable(store: Store) -> None:
    """A token is kept as a hash, never above its owner's role, and stops after revoke."""
    with store.engine.begin() as conn:
        d.add_user(conn, "otto", Role.OPERATOR, "h", 1)
        with pytest.raises(d.AccessError, match="owner's role"):
            d.create_token(conn, "otto", "ci", Role.ADMIN, 2)
        record, token = d.create_token(conn, "otto", "ci", Role.VIEWER, 2)
        stored = conn.execute(select(api_tokens.c.token_hash)).scalar_one()
        assert token not in stored and stored == token_hash(token)
        grant = d.find_token(conn, token)
        assert grant is not None and (grant.user, grant.role) == ("otto", Role.VIEWER)
        assert d.find_token(conn, token + "x") is None
        d.revoke_token(conn, record["id"], 3)
        assert d.find_token(conn, token) is None
        assert d.list_tokens(conn, "otto")[0]["revoked_at"] == 3


def test_demoting_or_removing_the_owner_limits_their_tokens(store: Store) -> None:
    """A token never speaks with more than its owner's current role, nor for a removed user."""
    with store.engine.begin() as conn:
        d.add_user(conn, "ada", Role.ADMIN, "h", 1)
        _, token = d.create_token(conn, "ada", "deploy", None, 2)
        assert d.find_token(conn, token).role is Role.ADMIN  # type: ignore[union-attr]
        assert d.set_role(conn, "ada", Role.VIEWER, 3) is Role.ADMIN
        assert d.find_token(conn, token).role is Role.VIEWER  # type: ignore[union-attr]
        assert d.remove_user(conn, "ada", 4) == 1
        assert d.find_token(conn, token) is None


def test_names_and_roles_are_checked() -> None:
    """Odd names and unknown roles get a clear error."""
    assert d.parse_role("Operator") is Role.OPERATOR
    with pytest.raises(d.AccessError, match="unknown role"):
        d.parse_role("root")
    for bad in ("", " ada", "a b", "x" * 129, "-lead", "a/b"):
        with pytest.raises(d.AccessError):
            d.check_name(bad)
