"""The store on a real SQLite file: what it records, and what it refuses to forget."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engine.store.status import ContentKind, Status
from engine.store.store import IncomingMessage, Store, Transition, now_us, open_store


def incoming(control_id: str, *, ack: str = "AA", app: str = "MON", channel: str = "inbound",
             raw: bytes | None = None, error: str | None = None) -> IncomingMessage:
    return IncomingMessage(
        channel=channel, received_at=now_us(), peer="127.0.0.1:40000",
        raw=raw or f"MSH|^~\\&|{app}|ICU|||20261125||ORU^R01|{control_id}|P|2.6\r".encode(),
        ack_code=ack, control_id=control_id, message_type="ORU^R01", version="2.6",
        sending_application=app, sending_facility="ICU", patient_id="MRN1", error=error)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


def test_sqlite_is_wal_with_full_sync(store: Store, tmp_path: Path) -> None:
    """The embedded store is power-loss safe: WAL journal and synchronous=FULL."""
    store.commit_batch([incoming("C1")])
    with store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert (tmp_path / "store.db-wal").exists()


def test_raw_content_is_kept_byte_for_byte(store: Store) -> None:
    """The raw message is stored exactly as received, including odd bytes."""
    raw = b"MSH|^~\\&|A|B|||||ORU^R01|X1|P|2.6\rPID|||\xc4\xd6\r\n"
    [stored] = store.commit_batch([incoming("X1", raw=raw)])
    assert store.content(stored.id, ContentKind.RAW) == raw
    assert stored.status is Status.RECEIVED


def test_duplicates_are_stored_and_marked_not_routed(store: Store) -> None:
    """Same sender, facility and MSH-10 again: stored, FILTERED, pointing at the original."""
    [first] = store.commit_batch([incoming("D1")])
    second, third = store.commit_batch([incoming("D1"), incoming("D1", app="OTHER")])
    assert second.status is Status.FILTERED and second.duplicate_of == first.id
    assert third.status is Status.RECEIVED and third.duplicate_of is None
    a, b = store.commit_batch([incoming("D2"), incoming("D2")])
    assert a.status is Status.RECEIVED and b.duplicate_of == a.id


def test_rejected_message_is_not_an_original(store: Store) -> None:
    """A message we answered AR is kept as ERROR and does not make its resend a duplicate."""
    [rejected] = store.commit_batch([incoming("R1", ack="AR", error="unreadable header")])
    [resent] = store.commit_batch([incoming("R1")])
    assert rejected.status is Status.ERROR
    assert resent.status is Status.RECEIVED and resent.duplicate_of is None


def test_duplicate_window_expires(tmp_path: Path) -> None:
    """Outside the window the same control id is a new message."""
    s = open_store(f"sqlite:///{tmp_path / 'w.db'}", duplicate_window_s=60)
    old = incoming("W1")
    s.commit_batch([old])
    with s.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE messages SET received_at = received_at - 120000000")
    [again] = s.commit_batch([incoming("W1")])
    assert again.status is Status.RECEIVED
    s.close()


def test_transitions_and_audit_trail(store: Store) -> None:
    """Each state change is one audit event, in order, and the chain verifies."""
    [m] = store.commit_batch([incoming("T1")])
    store.commit_batch([], [Transition(m.id, "inbound", Status.FILTERED, "no destinations")])
    [row] = store.list_messages(control_id="T1")
    assert row["status"] == "FILTERED"
    trail = store.audit_trail(m.id)
    assert [e["action"] for e in trail] == ["message.received", "message.status"]
    assert '"reason":"no destinations"' in trail[1]["detail"]
    checked, broken = store.verify_audit()
    assert (checked, broken) == (2, None)


def test_audit_tampering_is_detected(store: Store, tmp_path: Path) -> None:
    """Editing or deleting an audit row directly in SQLite breaks verification there."""
    store.commit_batch([incoming(f"A{i}") for i in range(5)])
    db = sqlite3.connect(tmp_path / "store.db")
    db.execute("UPDATE audit_events SET actor = 'mallory' WHERE id = 3")
    db.commit()
    _, broken = store.verify_audit()
    assert broken is not None and broken.event_id == 3
    db.execute("UPDATE audit_events SET actor = 'engine' WHERE id = 3")
    db.execute("DELETE FROM audit_events WHERE id = 2")
    db.commit()
    db.close()
    _, broken = store.verify_audit()
    assert broken is not None and broken.event_id == 3


def test_failed_commit_leaves_ids_and_chain_consistent(store: Store) -> None:
    """A transaction that fails writes nothing and the next one continues the chain."""
    store.commit_batch([incoming("F1")])
    bad = incoming("F2")
    bad.raw = None  # type: ignore[assignment]  # NOT NULL violation
    with pytest.raises(Exception):  # noqa: B017 - any driver error will do
        store.commit_batch([bad])
    [ok] = store.commit_batch([incoming("F3")])
    assert ok.id == 2
    assert [r["control_id"] for r in store.list_messages()] == ["F1", "F3"]
    assert store.verify_audit() == (2, None)


def test_ids_continue_after_reopen(tmp_path: Path) -> None:
    """A restarted store continues ids and the audit chain where the last run stopped."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    s = open_store(url)
    s.commit_batch([incoming("P1"), incoming("P2")])
    s.close()
    s = open_store(url)
    [m] = s.commit_batch([incoming("P3")])
    assert m.id == 3
    assert s.verify_audit() == (3, None)
    assert [mid for mid, _ in s.pending_routing()] == [1, 2, 3]
    s.close()
