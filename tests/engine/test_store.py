"""The store on a real SQLite file and a real PostgreSQL server: what it records, and what
it refuses to forget, alone and with several processes writing to one PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.schema import CreateTable

from engine.audit import AuditEvent
from engine.store.schema import audit_events, messages
from engine.store.status import ContentKind, Status
from engine.store.store import (
    MAX_PARAMETERS,
    MESSAGE_COLUMNS,
    SQLITE_PAGE_SIZE,
    IncomingMessage,
    Store,
    Transition,
    now_us,
    open_store,
    positional_marker,
)


def incoming(control_id: str, *, ack: str = "AA", app: str = "MON", channel: str = "inbound",
             raw: bytes | None = None, error: str | None = None) -> IncomingMessage:
    return IncomingMessage(
        channel=channel, received_at=now_us(), peer="127.0.0.1:40000",
        raw=raw or f"MSH|^~\\&|{app}|ICU|||20261125||ORU^R01|{control_id}|P|2.6\r".encode(),
        ack_code=ack, control_id=control_id, message_type="ORU^R01", version="2.6",
        sending_application=app, sending_facility="ICU", patient_id="MRN1", error=error)


def is_sqlite(store: Store) -> bool:
    return store.engine.dialect.name == "sqlite"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def stores(postgres_url: str) -> Iterator[Callable[[], Store]]:
    """Open as many stores on one PostgreSQL database as a test wants: one per process."""
    opened: list[Store] = []

    def open_one() -> Store:
        opened.append(open_store(postgres_url))
        return opened[-1]

    yield open_one
    for s in opened:
        s.close()


def test_sqlite_is_wal_with_full_sync(tmp_path: Path) -> None:
    """The embedded store is power-loss safe: WAL journal and synchronous=FULL."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    store.commit_batch([incoming("C1")])
    with store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert (tmp_path / "store.db-wal").exists()
    store.close()


def test_new_sqlite_store_has_large_pages_and_message_ids_as_row_ids(tmp_path: Path) -> None:
    """A new store packs several 2 KB messages per page and keeps no second index on
    message ids: the id column is SQLite's row id."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    store.commit_batch([incoming("C1")])
    with store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw.execute("PRAGMA page_size").fetchone()[0] == SQLITE_PAGE_SIZE
        indexes = [r[0] for r in raw.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'")]
    assert indexes and not [name for name in indexes if name.startswith("sqlite_autoindex")]
    store.close()


def test_store_made_with_small_pages_and_a_bigint_key_still_works(tmp_path: Path) -> None:
    """A file created before: 4 KiB pages and `id BIGINT PRIMARY KEY` (a separate unique
    index). It opens, keeps its page size, continues ids and routes as before."""
    path = tmp_path / "old.db"
    ddl = str(CreateTable(messages).compile(dialect=sqlite_dialect()))
    old_ddl = ddl.replace("id INTEGER NOT NULL", "id BIGINT NOT NULL")
    assert old_ddl != ddl
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA page_size=4096")
        db.execute(old_ddl)
    store = open_store(f"sqlite:///{path}")
    first = store.commit_batch([incoming("O1"), incoming("O2")])
    store.close()
    store = open_store(f"sqlite:///{path}")
    [third] = store.commit_batch([incoming("O3")])
    assert [m.id for m in first] + [third.id] == [1, 2, 3]
    store.commit_batch([], [Transition(third.id, "inbound", Status.FILTERED, "test")])
    [row] = store.list_messages(message_id=third.id)
    assert row["status"] == "FILTERED" and row["control_id"] == "O3"
    with store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw.execute("PRAGMA page_size").fetchone()[0] == 4096
    store.close()


def test_raw_content_is_kept_byte_for_byte(store: Store) -> None:
    """The raw message is stored exactly as received, including odd bytes."""
    raw = b"MSH|^~\\&|A|B|||||ORU^R01|X1|P|2.6\rPID|||\xc4\xd6\x00\r\n"
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


def test_duplicate_window_expires(store_url: str) -> None:
    """Outside the window the same control id is a new message."""
    s = open_store(store_url, duplicate_window_s=60)
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


def test_audit_tampering_is_detected(store: Store) -> None:
    """Editing or deleting an audit row directly in the database breaks verification."""
    store.commit_batch([incoming(f"A{i}") for i in range(5)])
    with store.engine.begin() as db:
        db.exec_driver_sql("UPDATE audit_events SET actor = 'mallory' WHERE id = 3")
    _, broken = store.verify_audit()
    assert broken is not None and broken.event_id == 3
    with store.engine.begin() as db:
        db.exec_driver_sql("UPDATE audit_events SET actor = 'engine' WHERE id = 3")
        db.exec_driver_sql("DELETE FROM audit_events WHERE id = 2")
    _, broken = store.verify_audit()
    assert broken is not None and broken.event_id == 3


def test_failed_commit_leaves_ids_and_chain_consistent(store: Store) -> None:
    """A transaction that fails writes nothing and the next one continues the chain.

    SQLite hands the failed id out again; a PostgreSQL sequence never goes back, so there
    the failed transaction leaves a gap in the ids (not in the audit chain).
    """
    store.commit_batch([incoming("F1")])
    bad = incoming("F2")
    bad.raw = None  # type: ignore[assignment]  # NOT NULL violation
    with pytest.raises(Exception):  # noqa: B017 - any driver error will do
        store.commit_batch([bad])
    [ok] = store.commit_batch([incoming("F3")])
    assert ok.id == (2 if is_sqlite(store) else 3)
    assert [r["control_id"] for r in store.list_messages()] == ["F1", "F3"]
    assert store.verify_audit() == (2, None)


def test_ids_continue_after_reopen(store_url: str) -> None:
    """A restarted store continues ids and the audit chain where the last run stopped."""
    s = open_store(store_url)
    s.commit_batch([incoming("P1"), incoming("P2")])
    s.close()
    s = open_store(store_url)
    [m] = s.commit_batch([incoming("P3")])
    assert m.id == 3
    assert s.verify_audit() == (3, None)
    assert [mid for mid, _ in s.pending_routing()] == [1, 2, 3]
    s.close()


def test_batches_larger_than_one_statement(store: Store) -> None:
    """More rows than one statement may bind go out in several statements, all committed."""
    count = MAX_PARAMETERS // len(MESSAGE_COLUMNS) + 7
    stored = store.commit_batch([incoming(f"L{i}") for i in range(count)])
    assert [s.id for s in stored] == list(range(1, count + 1))
    store.commit_batch([], [Transition(s.id, "inbound", Status.FILTERED, "x") for s in stored])
    assert {r["status"] for r in store.list_messages()} == {"FILTERED"}
    assert store.verify_audit() == (2 * count, None)


def test_odd_header_values_do_not_fail_the_batch(store: Store) -> None:
    """Values longer than their column, or with NUL, are cut the same way on both backends.

    PostgreSQL would refuse them and fail every message sharing the transaction.
    """
    long_id = "L" * 300
    odd, plain = incoming(long_id, app="MON\x00ITOR"), incoming("N1")
    odd.patient_id = "9" * 400
    first, ok = store.commit_batch([odd, plain])
    assert ok.status is Status.RECEIVED
    [row] = store.list_messages(control_id=long_id[:199])
    assert row["id"] == first.id
    assert row["sending_application"] == "MON\ufffdITOR"
    assert len(row["patient_id"]) == 250
    assert store.content(first.id) == odd.raw
    [again] = store.commit_batch([incoming(long_id, app="MON\x00ITOR")])
    assert again.duplicate_of == first.id
    assert store.verify_audit() == (3, None)


def test_positional_markers_follow_the_driver() -> None:
    """sqlite3 takes `?`, psycopg (pyformat) `%s`; anything else is refused, not guessed."""
    assert create_engine("sqlite://").dialect.paramstyle == "qmark"
    assert create_engine("postgresql+psycopg://u@127.0.0.1/x").dialect.paramstyle == "pyformat"
    assert positional_marker("qmark") == "?"
    assert positional_marker("pyformat") == "%s"
    assert positional_marker("format") == "%s"
    with pytest.raises(ValueError, match="numeric"):
        positional_marker("numeric")


# -- several processes on one PostgreSQL -------------------------------------------------


def test_plain_postgresql_url_uses_psycopg(postgres_url: str) -> None:
    """`postgresql://…` (no driver named) opens with psycopg 3, the driver we ship."""
    s = open_store(postgres_url.replace("postgresql+psycopg://", "postgresql://"))
    assert s.engine.dialect.driver == "psycopg"
    [m] = s.commit_batch([incoming("U1")])
    assert m.id == 1
    s.close()


def test_two_stores_interleaved_share_ids_chain_and_duplicates(
        stores: Callable[[], Store]) -> None:
    """Two engine processes on one database: unique ids, one unbroken chain, and a resend
    that reaches the other process is still a duplicate."""
    a, b = stores(), stores()
    ids: list[int] = []
    for n in range(5):
        ids += [m.id for m in a.commit_batch([incoming(f"A{n}"), incoming(f"A{n}x")])]
        ids += [m.id for m in b.commit_batch([incoming(f"B{n}")])]
        b.commit_batch([], [Transition(ids[-1], "inbound", Status.FILTERED, "none")])
    assert ids == sorted(ids) and len(set(ids)) == 15
    [dup] = b.commit_batch([incoming("A0")])
    assert dup.status is Status.FILTERED and dup.duplicate_of == ids[0]
    assert a.verify_audit() == (15 + 5 + 1, None)


def test_concurrent_writers_keep_one_chain_in_commit_order(
        stores: Callable[[], Store]) -> None:
    """Writers in parallel: every id unique, the chain unbroken, ids in commit order."""
    writers = [stores() for _ in range(3)]
    batches = 20
    start = threading.Barrier(len(writers))
    errors: list[BaseException] = []
    done: list[list[int]] = [[] for _ in writers]

    def run(index: int) -> None:
        try:
            start.wait()
            for n in range(batches):
                batch = [incoming(f"W{index}-{n}-{k}") for k in range(3)]
                stored = writers[index].commit_batch(batch)
                writers[index].commit_batch(
                    [], [Transition(stored[0].id, "inbound", Status.FILTERED, "t")])
                done[index] += [m.id for m in stored]
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    all_ids = [mid for ids in done for mid in ids]
    assert len(set(all_ids)) == len(all_ids) == 3 * 3 * batches
    checked, broken = writers[0].verify_audit()
    assert (checked, broken) == (len(all_ids) + 3 * batches, None)
    with writers[0].engine.connect() as conn:
        received = [r[0] for r in conn.exec_driver_sql(
            "SELECT message_id FROM audit_events WHERE action = 'message.received' ORDER BY id")]
    assert received == sorted(received)


def test_processes_creating_the_schema_together(postgres_url: str) -> None:
    """Engines started at the same moment on an empty database all come up."""
    starters = 4
    start = threading.Barrier(starters)
    opened: list[Store] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            opened.append(open_store(postgres_url))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(starters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [len(s.commit_batch([incoming(f"S{i}")])) for i, s in enumerate(opened)] == [1] * 4
    for s in opened:
        s.close()


def test_writer_survives_a_dropped_connection(stores: Callable[[], Store]) -> None:
    """A server-side disconnect fails one batch; the next one reconnects and commits."""
    store = stores()
    [first] = store.commit_batch([incoming("K1")])
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with pytest.raises(Exception):  # noqa: B017 - the driver's disconnect error
        store.commit_batch([incoming("K2")])
    [second] = store.commit_batch([incoming("K3")])
    assert second.id > first.id
    assert [r["control_id"] for r in store.list_messages()] == ["K1", "K3"]
    assert store.verify_audit() == (2, None)


def test_ids_never_reused_after_rows_copied_in(stores: Callable[[], Store]) -> None:
    """Rows written by something else (a migration) push the id sequence past them."""
    first = stores()
    first.commit_batch([incoming("M1")])
    with first.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO messages (id, channel, received_at, peer, control_id, message_type, "
            "version, sending_application, sending_facility, patient_id, status, ack_code, "
            "updated_at) VALUES (41, 'inbound', 0, '', 'M41', '', '', '', '', '', "
            "'RECEIVED', 'AA', 0)")
    [m] = stores().commit_batch([incoming("M42")])
    assert m.id == 42


def test_human_actions_join_the_same_chain_as_message_events(store: Store) -> None:
    """An action appended between message batches is sealed into the one chain, in order."""
    store.commit_batch([incoming("A-1")])
    store.append_audit([AuditEvent(now_us(), "ada", "message.view", 1, "inbound",
                                   {"peer": "127.0.0.1:5000"})])
    store.commit_batch([incoming("A-2")])
    checked, broken = store.verify_audit()
    assert broken is None
    with store.engine.connect() as conn:
        actions = [(r.actor, r.action) for r in conn.execute(
            select(audit_events).order_by(audit_events.c.id))]
    assert actions == [("engine", "message.received"), ("ada", "message.view"),
                       ("engine", "message.received")]
    assert checked == 3


def test_a_not_delivered_answer_makes_a_resend_a_new_message(store: Store) -> None:
    """Once the sender heard AE (CE) for a message, its control id no longer marks a
    resend as a duplicate; the change is audited, and only accepted messages change."""
    first, enhanced, rejected = store.commit_batch(
        [incoming("N1"), incoming("N2", ack="CA"), incoming("N3", ack="AR")])
    store.commit_batch([], not_delivered=[first.id, enhanced.id, rejected.id, 10_000])
    store.commit_batch([], not_delivered=[first.id])  # already answered AE: no change
    again, second = store.commit_batch([incoming("N1"), incoming("N2", ack="CA")])
    assert (again.duplicate_of, second.duplicate_of) == (None, None)
    assert [r["ack_code"] for r in store.list_messages()] == ["AE", "CE", "AR", "AA", "CA"]
    answered = {m.id: [(e["action"], json.loads(e["detail"]))
                       for e in store.audit_trail(m.id)][1:]
                for m in (first, enhanced, rejected)}
    assert answered == {
        first.id: [("message.answered", {"ack": "AE", "reason": "not delivered"})],
        enhanced.id: [("message.answered", {"ack": "CE", "reason": "not delivered"})],
        rejected.id: []}
    assert store.verify_audit() == (7, None)
