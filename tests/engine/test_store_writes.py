"""How the writer's transaction writes: audit rows sealed exactly as chains already stored
were, detail JSON written directly with the bytes `detail_json` gives, placeholders per
driver, and driver errors raised as SQLAlchemy raises them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.exc import IntegrityError

from engine.audit import (
    GENESIS_HASH,
    AuditChain,
    AuditEvent,
    canonical_form,
    detail_json,
    seal,
)
from engine.store.deliveries import (
    DeliveryOutcome,
    NewDelivery,
    Placeholders,
    Routing,
    outcome_detail,
    routed_detail,
    statement_rows,
    status_detail,
)
from engine.store.status import Status
from engine.store.store import (
    IncomingMessage,
    Store,
    WriterCursor,
    now_us,
    open_store,
    received_detail,
)

ODD_TEXTS = ("", "plain", 'quote " and \\ backslash', "Ç-ü-\u2028-😀", "tab\tNUL\x00\x7f")

KNOWN_CHAIN = [
    (AuditEvent(1_764_000_000_000_000, "engine", "message.received", 1, "inbound",
                {"status": "RECEIVED", "ack": "AA", "peer": "10.0.0.1:4000",
                 "control_id": 'Ç"1\\'}),
     '{"status":"RECEIVED","ack":"AA","peer":"10.0.0.1:4000","control_id":"\\u00c7\\"1\\\\"}',
     "bd067ae1f298d487d0a820837af45b827a734fab7b407bd85ee3befacc1d85e9"),
    (AuditEvent(1_764_000_000_000_001, "ada", "auth.login", None, None,
                {"peer": "p", "n": [1, 2]}),
     '{"peer":"p","n":[1,2]}',
     "d626e8299845160a4addbb139bb59cdf80b91b563f82f2c83d727c5fa0c34dc8"),
    (AuditEvent(1_764_000_000_000_002, "bob", "config.change", None, "", {}),
     "{}",
     "15c8249ccfc9812a38ba2081cbea046ba63acb39c1678bcae3951faa4b37a34b"),
    (AuditEvent(1_764_000_000_000_003, "engine", "delivery.sent", 12, "pümps",
                {"destination": "ehr", "status": "SENT", "attempt": 1, "held": 1}),
     '{"destination":"ehr","status":"SENT","attempt":1,"held":1}',
     "d429a49f36414c62a2b111461d16e010e551064e478e240d87c343b462fda82a"),
]
"""Events and the detail and hash the chain has always given them (from the genesis hash)."""


def reference_canonical_form(at: Any, actor: Any, action: Any, message_id: Any,
                             channel: Any, detail: Any) -> bytes:
    """The canonical form as first defined, field by field, to compare against."""
    def part(value: Any) -> str:
        text = "" if value is None else str(value)
        return f"{len(text)}:{text}"

    tags = "".join("n" if v is None else "v" for v in (message_id, channel))
    return "|".join((tags, part(at), part(actor), part(action), part(message_id),
                     part(channel), part(detail))).encode("utf-8")


def test_known_events_keep_their_hashes() -> None:
    """A chain stored before keeps verifying: same detail JSON, same hashes, both ways in."""
    events = [event for event, _, _ in KNOWN_CHAIN]
    rows = AuditChain().rows(events)
    assert [(row[5], row[7]) for row in rows] == [(d, h) for _, d, h in KNOWN_CHAIN]
    entries = [(e.at, e.actor, e.action, e.message_id, e.channel, d)
               for e, d, _ in KNOWN_CHAIN]
    assert AuditChain().seal_entries(entries) == rows
    assert rows[0][6] == GENESIS_HASH
    assert rows[1][7] == seal(rows[0][7], canonical_form(*entries[1]))


@pytest.mark.parametrize("text", ODD_TEXTS)
@pytest.mark.parametrize("message_id", [None, 0, 7, 12345678901])
def test_canonical_form_is_the_length_prefixed_form(text: str, message_id: int | None
                                                    ) -> None:
    """Every field, None or empty or odd text, gives the bytes the form always had."""
    for channel in (None, "", text):
        args = (1_764_000_000_000_000, text or "engine", text, message_id, channel, text)
        assert canonical_form(*args) == reference_canonical_form(*args)
    nothing: Any = None  # stored rows are read back untyped
    assert canonical_form(nothing, nothing, nothing, None, None, nothing) == (
        reference_canonical_form(None, None, None, None, None, None))


def message(text: str, **changes: Any) -> IncomingMessage:
    fields: dict[str, Any] = dict(channel="inbound", received_at=1, peer=text, raw=b"MSH",
                                  ack_code=text[:2], control_id=text)
    fields.update(changes)
    return IncomingMessage(**fields)


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_written_details_match_detail_json(text: str) -> None:
    """Each detail written directly is byte for byte what `detail_json` makes of its dict."""
    for msg, duplicate_of in ((message(text), None), (message(text, error=text), 4),
                              (message(text, parent_id=9, error=None), 12)):
        expected: dict[str, Any] = {"status": "RECEIVED", "ack": msg.ack_code,
                                    "peer": msg.peer, "control_id": msg.control_id}
        if duplicate_of is not None:
            expected["duplicate_of"] = duplicate_of
        if msg.error is not None:
            expected["error"] = msg.error
        if msg.parent_id is not None:
            expected["parent_id"] = msg.parent_id
        assert received_detail("RECEIVED", msg, duplicate_of) == detail_json(expected)

    assert status_detail("SENT") == detail_json({"status": "SENT"})
    expected = {"status": "FILTERED", "reason": text} if text else {"status": "FILTERED"}
    assert status_detail("FILTERED", text) == detail_json(expected)

    routing = Routing(1, "inbound", Status.QUEUED, text, None, (
        NewDelivery(f"ehr{text}", b"p"), NewDelivery("fhir", None, "", Status.FILTERED),
        NewDelivery("file", b"q"), NewDelivery("x", None, "", Status.ERROR, text)))
    routed: dict[str, Any] = {"status": "QUEUED"}
    if text:
        routed["reason"] = text
    routed.update(queued=f"ehr{text},file", filtered="fhir")
    assert routed_detail(routing) == detail_json(routed)
    assert routed_detail(Routing(1, "inbound", Status.ERROR)) == detail_json(
        {"status": "ERROR"})

    for held in (False, True):
        outcome = DeliveryOutcome(3, 1, "inbound", text, Status.ERROR, 5, 0, None, text,
                                  text, None, held)
        done: dict[str, Any] = {"destination": text, "status": "ERROR", "attempt": 5}
        if text:
            done["detail"] = text
        if held:
            done["held"] = 1
        assert outcome_detail(outcome, "ERROR") == detail_json(done)


def test_placeholders_follow_the_writer_cursor() -> None:
    """`?` as written for sqlite3, `%s` for format drivers, `$n` for psycopg's raw cursor."""
    sql = "UPDATE t SET a = ? WHERE id IN (?, ?)"
    assert Placeholders("qmark")(sql) == sql
    assert Placeholders("pyformat")(sql) == "UPDATE t SET a = %s WHERE id IN (%s, %s)"
    assert Placeholders("numeric_dollar")(sql) == "UPDATE t SET a = $1 WHERE id IN ($2, $3)"
    with pytest.raises(ValueError):
        Placeholders("named")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def incoming(control_id: str) -> IncomingMessage:
    return IncomingMessage(
        channel="inbound", received_at=now_us(), peer="127.0.0.1:40000",
        raw=f"MSH|^~\\&|MON|ICU|||20261125||ORU^R01|{control_id}|P|2.6\r".encode(),
        ack_code="AA", control_id=control_id, message_type="ORU^R01", version="2.6",
        sending_application="MON", sending_facility="ICU", patient_id="MRN1")


def test_a_refused_batch_raises_sqlalchemys_error_without_its_values(store: Store) -> None:
    """A row the database refuses fails the whole batch with SQLAlchemy's error, its
    parameters (message content) hidden; once the conflict is gone the writer goes on."""
    [first] = store.commit_batch([incoming("K1")])
    with store.engine.begin() as conn:  # a row with the id the next message would get
        conn.exec_driver_sql(
            "INSERT INTO messages (id, channel, received_at, peer, control_id, message_type, "
            "version, sending_application, sending_facility, patient_id, status, ack_code, "
            f"updated_at) VALUES ({first.id + 1}, 'inbound', 0, '', 'X', '', '', '', '', '', "
            "'RECEIVED', 'AA', 0)")
    with pytest.raises(IntegrityError) as refused:
        store.commit_batch([incoming("SECRET-7")])
    assert "SECRET" not in str(refused.value)
    assert "parameters hidden" in str(refused.value)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM messages WHERE id = {first.id + 1}")
    [after] = store.commit_batch([incoming("K2")])
    assert [r["control_id"] for r in store.list_messages()] == ["K1", "K2"]
    assert after.id > first.id
    assert store.verify_audit() == (2, None)


def test_text_from_messages_and_peers_never_fails_a_batch(store: Store) -> None:
    """A NUL or an over-long lane key in a reason, an error or a lane (text that comes from a
    message or a peer) is stored replaced and cut, the same on both backends, instead of
    failing the transaction and every other message in it."""
    first, second = store.commit_batch([incoming("T1"), incoming("T2")])
    lane = "MRN\x00" + "9" * 400
    store.commit_batch([], routings=[
        Routing(first.id, "inbound", Status.ERROR, "step failed", "ValueError: bad\x00value"),
        Routing(second.id, "inbound", Status.QUEUED, deliveries=[
            NewDelivery("ehr", b"MSH|payload", lane, Status.QUEUED),
            NewDelivery("archive", None, "", Status.FILTERED, "filtered\x00here")]),
    ])
    with store.engine.begin() as conn:
        error = conn.exec_driver_sql(
            f"SELECT error FROM messages WHERE id = {first.id}").scalar()
        rows = conn.exec_driver_sql(
            "SELECT id, destination, lane_key, last_error FROM deliveries "
            f"WHERE message_id = {second.id} ORDER BY destination").all()
    assert error == "ValueError: bad\ufffdvalue"
    (archive_id, _, _, archive_error), (ehr_id, _, ehr_lane, _) = rows
    assert archive_error == "filtered\ufffdhere"
    assert ehr_lane == ("MRN\ufffd" + "9" * 400)[:250]
    store.commit_batch([], outcomes=[DeliveryOutcome(
        ehr_id, second.id, "inbound", "ehr", Status.QUEUED, 2, now_us(), now_us(),
        "AE from the EHR: \x00")])
    with store.engine.begin() as conn:
        last_error = conn.exec_driver_sql(
            f"SELECT last_error FROM deliveries WHERE id = {ehr_id}").scalar()
    assert last_error == "AE from the EHR: \ufffd"
    assert archive_id != ehr_id
    assert store.verify_audit()[1] is None


@given(st.integers(min_value=1, max_value=100_000), st.integers(min_value=1, max_value=40_000))
def test_statement_sizes_cover_the_batch_within_half_again(count: int, limit: int) -> None:
    """A statement is written for at least the rows it carries (up to its limit) and for
    at most half as many again."""
    rows = statement_rows(count, limit)
    assert min(count, limit) <= rows <= limit
    assert rows <= max(2, count * 3 // 2)


def test_a_few_statement_sizes_serve_every_batch() -> None:
    assert {statement_rows(n, 10_000) for n in range(1, 513)} == {
        1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512}


def test_every_batch_size_is_written_exactly_with_few_statement_texts(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 1 to 70 messages, each routed in the next commit: every row lands once
    (padding rows and repeated ids leave no trace), and the writer sends a few dozen
    statement texts, not one per batch size (the driver's cache keeps them compiled)."""
    texts: set[str] = set()
    execute, rows = WriterCursor.execute, WriterCursor.rows

    def note_execute(cursor: WriterCursor, sql: str, params: Any = ()) -> int:
        texts.add(sql)
        return execute(cursor, sql, params)

    def note_rows(cursor: WriterCursor, sql: str, params: Any = ()) -> list[Any]:
        texts.add(sql)
        return rows(cursor, sql, params)

    monkeypatch.setattr(WriterCursor, "execute", note_execute)
    monkeypatch.setattr(WriterCursor, "rows", note_rows)
    previous: list[Any] = []
    total = 0
    for size in range(1, 71):
        batch = [incoming(f"B{size}-{i}") for i in range(size)]
        routings = [Routing(m.id, "inbound", Status.QUEUED, deliveries=[
            NewDelivery("ehr", b"MSH|out", "", Status.QUEUED)]) for m in previous]
        previous = store.commit_batch(batch, routings=routings)
        total += size
    assert [m.id for m in previous] == list(range(total - 69, total + 1))
    with store.engine.begin() as conn:
        count = {table: conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
                 for table in ("messages", "contents", "deliveries")}
        statuses = dict(conn.exec_driver_sql(
            "SELECT status, count(*) FROM messages GROUP BY status").all())
    routed = total - 70
    assert count == {"messages": total, "contents": total + routed, "deliveries": routed}
    assert statuses == {"QUEUED": routed, "RECEIVED": 70}
    assert store.verify_audit() == (total + routed, None)
    if store.engine.dialect.name == "sqlite":
        # Six statements, 13 sizes each up to 70 rows (one per batch size would be 70 each).
        assert len(texts) <= 6 * 13
