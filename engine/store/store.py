"""The store: a narrow, synchronous interface over SQLAlchemy Core.

Writes happen only through `commit_batch`, which the group-commit writer calls from its
one thread; reads (`list_messages`, `pending_routing`, ...) are safe from anywhere,
including another process while the engine runs (SQLite in WAL mode). On PostgreSQL
several engine processes may write to one database at once: `Store._claim` orders their
transactions, so ids stay unique and the audit chain stays one chain.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from itertools import chain
from operator import methodcaller
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from engine.audit import (
    GENESIS_HASH,
    ROW_COLUMNS,
    AuditChain,
    AuditEvent,
    Entry,
    json_text,
    verify_rows,
)
from engine.store import schema
from engine.store.deliveries import (
    LEASE_SECONDS,
    Claim,
    DeliveryOutcome,
    DeliveryWrites,
    IdList,
    Placeholders,
    QueuedDelivery,
    Routing,
    arrival_prefix,
    claim_lanes,
    claim_reach,
    fetch_held_lanes,
    fetch_queued,
    fill_payloads,
    lease_queue,
    release_leases,
    renew_leases,
    routed_before,
    statement_rows,
    status_detail,
)
from engine.store.schema import audit_events, contents, messages
from engine.store.status import ContentKind, Status
from engine.store.text import storable, storable_or_none

POSITIVE_ACKS = ("AA", "CA")
T = TypeVar("T")
ENGINE_ACTOR = "engine"
RAW_KIND, ACK_KIND = ContentKind.RAW.value, ContentKind.ACK.value

_ACCEPTED = (Status.RECEIVED, Status.RECEIVED.value, "message.received")
_DUPLICATE = (Status.FILTERED, Status.FILTERED.value, "message.duplicate")
_REJECTED = (Status.ERROR, Status.ERROR.value, "message.rejected")
"""What an incoming message becomes: its status, the status as stored, its audit action."""


MESSAGE_COLUMNS = (
    "id", "channel", "received_at", "peer", "control_id", "message_type", "version",
    "sending_application", "sending_facility", "patient_id", "status", "ack_code",
    "duplicate_of", "error", "updated_at", "parent_id",
)
CONTENT_COLUMNS = ("message_id", "kind", "destination", "created_at", "data")
DELIVERY_COLUMNS = (
    "message_id", "channel", "destination", "status", "lane_key", "attempts",
    "next_attempt_at", "first_attempt_at", "held", "last_error", "updated_at",
)


SQLITE_CACHED_STATEMENTS = 512
"""Compiled statements sqlite3 keeps per connection (its default of 128 is too few)."""
MAX_PARAMETERS = 30000
"""Bound parameters per statement: under SQLite's (32766) and PostgreSQL's (65535) limits."""

SCHEMA_LOCK = 0x494C_0001
"""PostgreSQL advisory lock key held while creating tables (processes starting together)."""
WRITER_LOCK = 0x494C_0002
"""PostgreSQL advisory lock key that orders the write transactions of every process."""
CATCH_UP_IDS = (
    "SELECT setval('message_ids', m) FROM (SELECT max(id) AS m FROM messages) AS t "
    "WHERE m >= (SELECT last_value FROM message_ids)"
)
"""Move the id sequence past rows it did not hand out (copied in from elsewhere)."""
LAST_HASH = "SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1"
"""The tail of the audit chain as committed."""


def positional_marker(paramstyle: str) -> str:
    """The driver's positional placeholder: `?` for sqlite3, `%s` for psycopg (pyformat)."""
    if paramstyle == "qmark":
        return "?"
    if paramstyle in ("format", "pyformat"):
        return "%s"
    raise ValueError(f"unsupported DB-API paramstyle {paramstyle!r}: "
                     "the store needs qmark, format or pyformat")


def writer_cursors(dialect: Any) -> tuple[Placeholders, Callable[[Any], Any]]:
    """The placeholders the writer's statements use, and how its cursor is made.

    With psycopg 3 the writer uses a raw cursor (`$1, $2, …` sent as written); any other
    driver gets its own positional style and ordinary cursor.
    """
    if dialect.driver == "psycopg":
        from psycopg import RawCursor

        return Placeholders("numeric_dollar"), RawCursor
    return Placeholders(dialect.paramstyle), methodcaller("cursor")


class WriterCursor:
    """The writer transaction's statements, handed straight to the driver's cursor.

    `Connection.exec_driver_sql` builds an execution context and result metadata for
    every statement, some 15 µs of the writer thread's time with the interpreter lock
    held, and the writer needs none of it: its SQL is written for the driver already.
    Driver errors still come out as SQLAlchemy raises them: parameters hidden (promise
    6), and a lost connection invalidated, so that the next batch reconnects.
    """

    def __init__(self, conn: Connection, cursor_factory: Callable[[Any], Any]) -> None:
        if not conn.in_transaction():
            conn.begin()  # what is sent here commits or rolls back with `conn`
        self._conn = conn
        self._dialect = conn.dialect
        self._error: type[Exception] = conn.dialect.loaded_dbapi.Error
        self._dbapi_connection = conn.connection.dbapi_connection
        assert self._dbapi_connection is not None
        self._cursor = cursor_factory(self._dbapi_connection)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; how many rows it changed."""
        try:
            self._cursor.execute(sql, params)
        except self._error as error:
            raise self._failed(error, sql, params) from error
        return int(self._cursor.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""
        try:
            self._cursor.executemany(sql, rows)
        except self._error as error:
            raise self._failed(error, sql, rows) from error

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a query (or a statement with RETURNING); all its rows."""
        try:
            self._cursor.execute(sql, params)
            return list(self._cursor.fetchall())
        except self._error as error:
            raise self._failed(error, sql, params) from error

    def close(self) -> None:
        """Let go of the driver's cursor (the transaction stays open)."""
        with suppress(self._error):  # a lost connection's cursor has nothing to release
            self._cursor.close()

    def _failed(self, error: Exception, sql: str, params: Any) -> BaseException:
        disconnected = self._dialect.is_disconnect(error, self._dbapi_connection, self._cursor)
        if disconnected:
            self._conn.invalidate(error)
        return DBAPIError.instance(sql, params, error, self._error, hide_parameters=True,
                                   connection_invalidated=disconnected, dialect=self._dialect)


class MultiRowInsert:
    """`INSERT … VALUES (…), (…), …` for many rows in one statement.

    One statement per table and batch instead of one step per row: the driver releases
    and retakes the GIL around each step, and every retake may wait behind the reactor
    thread, so fewer steps is what keeps group commit fast under load.

    With `pad` (SQLite) the statement is written for `statement_rows` rows and the rows
    missing from a batch are bound as NULL and skipped by the statement's `WHERE`, so the
    driver's statement cache holds every shape the writer sends. The first column must
    never be NULL in a real row. (PostgreSQL would type a `VALUES` list apart from the
    table's columns, so there each batch size keeps its own text.)
    """

    def __init__(self, table: str, columns: Sequence[str], placeholders: Placeholders,
                 *, pad: bool = False) -> None:
        self._head = f"INSERT INTO {table} ({', '.join(columns)}) "
        self._placeholders = placeholders
        self._pad = pad
        self._row = f"({', '.join(['?'] * len(columns))})"
        self._nulls = (None,) * len(columns)
        self._rows_per_statement = max(1, MAX_PARAMETERS // len(columns))
        self._sql: dict[int, str] = {}

    def _statement(self, rows: int) -> str:
        sql = self._sql.get(rows)
        if sql is None:
            values = "VALUES " + ", ".join([self._row] * rows)
            if self._pad:
                values = f"SELECT * FROM ({values}) WHERE column1 IS NOT NULL"
            sql = self._sql[rows] = self._placeholders(self._head + values)
        return sql

    def execute(self, cursor: WriterCursor, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert all rows, in as few statements as the parameter limit allows."""
        step = self._rows_per_statement
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            if self._pad:
                chunk = [*chunk, *[self._nulls] * (statement_rows(len(chunk), step) - len(chunk))]
            cursor.execute(self._statement(len(chunk)), tuple(chain.from_iterable(chunk)))


def now_us() -> int:
    """Wall-clock time in the store's unit (integer microseconds, UTC epoch)."""
    return time.time_ns() // 1000


@dataclass(slots=True)
class IncomingMessage:
    """A message as it came off the wire, with the header facts read on the hot path."""

    channel: str
    received_at: int
    peer: str
    raw: bytes
    ack_code: str
    control_id: str = ""
    message_type: str = ""
    version: str = ""
    sending_application: str = ""
    sending_facility: str = ""
    patient_id: str = ""
    error: str | None = None
    parent_id: int | None = None
    ack: bytes = b""
    """The acknowledgment answered to the sender, stored beside the raw message."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """What the store decided for an incoming message once it was committed."""

    id: int
    channel: str
    status: Status
    duplicate_of: int | None


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of a message's status, with a reason that names ids, never content."""

    message_id: int
    channel: str
    status: Status
    reason: str = ""
    error: str | None = None


SQLITE_PAGE_SIZE = 8192
"""Bytes per page of a new SQLite store. A 2 KB device message fills more than half of a
4 KiB page, so there each raw message had a page to itself; 8 KiB pages hold three with
their ACKs: a third less file and WAL per message, and fewer frames in every commit."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL with synchronous=FULL: a committed message survives power loss.

    The page size and incremental auto-vacuum (which lets retention give pruned pages
    back to the file system) take effect only on a store created with them (no-ops on
    older files); the page size must come first.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def sqlite_url(data_dir: Path) -> str:
    """The embedded default store location under a data directory."""
    return f"sqlite:///{(data_dir / 'interlink.db').resolve()}"


def open_store(url: str, *, duplicate_window_s: float = 86400.0) -> Store:
    """Open (and create if needed) the store at a SQLAlchemy URL.

    Statement parameters are hidden from driver errors: they hold message content, and
    error texts reach the logs (promise 6).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Room for every statement shape the writer sends (`statement_rows`: some 20
        # sizes for each of its dozen statements) besides the readers' own.
        engine = create_engine(url, hide_parameters=True,
                               connect_args={"cached_statements": SQLITE_CACHED_STATEMENTS})
        event.listen(engine, "connect", _sqlite_pragmas)
    elif parsed.get_backend_name() == "postgresql":
        engine = _postgresql_engine(parsed)
    else:
        engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
        schema.all_tables().create_all(conn)
    return Store(engine, duplicate_window_us=int(duplicate_window_s * 1_000_000))


def _postgresql_engine(url: URL) -> Engine:
    """PostgreSQL through psycopg 3, shared by several engine processes.

    READ COMMITTED is required, not just the default: after the writer lock is granted,
    the next statement must see what the previous lock holder committed. Pooled
    connections are checked before use and renewed, so a restarted server or a dropped
    idle connection costs a reconnect, not a failed batch.
    """
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {}
    if "application_name" not in url.query:
        connect_args["application_name"] = "interlink"
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10
    return create_engine(url, hide_parameters=True, isolation_level="READ COMMITTED",
                         pool_pre_ping=True, pool_size=5, max_overflow=10, pool_recycle=1800,
                         connect_args=connect_args)


_FITTED_COLUMNS = tuple(
    (name, messages.c[name].type.length)
    for name in ("channel", "peer", "control_id", "message_type", "version",
                 "sending_application", "sending_facility", "patient_id")
)


def fit_to_columns(msg: IncomingMessage) -> IncomingMessage:
    """The message with its header facts cut to their column sizes and NULs replaced.

    PostgreSQL refuses a value longer than its column or a NUL in text, and one odd header
    would then fail the whole group-commit batch (every sender in it answered AE 207),
    where SQLite keeps such values as they are. Both backends store the same cut values,
    so lists and duplicate detection agree; the raw content keeps every byte.
    """
    changes: dict[str, str] = {}
    for name, limit in _FITTED_COLUMNS:
        value = getattr(msg, name)
        if len(value) > limit or "\x00" in value:
            changes[name] = storable(value, limit)
    if msg.error is not None and "\x00" in msg.error:
        changes["error"] = storable(msg.error)
    return replace(msg, **changes) if changes else msg


def received_detail(status: str, msg: IncomingMessage, duplicate_of: int | None) -> str:
    """The detail JSON of a message's first audit event, as `detail_json` writes it.

    Written out directly: one string instead of a dict serialised key by key, for the
    event every message gets.
    """
    detail = (f'{{"status":{json_text(status)},"ack":{json_text(msg.ack_code)},'
              f'"peer":{json_text(msg.peer)},"control_id":{json_text(msg.control_id)}')
    if duplicate_of is not None:
        detail += f',"duplicate_of":{duplicate_of}'
    if msg.error is not None:
        detail += f',"error":{json_text(msg.error)}'
    if msg.parent_id is not None:
        detail += f',"parent_id":{msg.parent_id}'
    return detail + "}"


class Store:
    """Append raw messages, record transitions, answer queries; nothing more."""

    def __init__(self, engine: Engine, *, duplicate_window_us: int) -> None:
        self.engine = engine
        self.duplicate_window_us = duplicate_window_us
        self._writer: Connection | None = None
        self._next_id = 0
        self._chain: AuditChain | None = None
        self._shared = engine.dialect.name == "postgresql"
        self._marker = positional_marker(engine.dialect.paramstyle)
        p, self._cursor_factory = writer_cursors(engine.dialect)
        self._claim_sql = p(
            "SELECT (SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1), "
            "nextval('message_ids') FROM generate_series(1, ?)"
        )
        pad = engine.dialect.name == "sqlite"
        self._insert_message = MultiRowInsert("messages", MESSAGE_COLUMNS, p, pad=pad)
        self._insert_content = MultiRowInsert("contents", CONTENT_COLUMNS, p, pad=pad)
        self._insert_audit = MultiRowInsert("audit_events", ROW_COLUMNS, p, pad=pad)
        self._set_status = IdList(
            p, "UPDATE messages SET status = ?, error = ?, updated_at = ? WHERE id")
        self._originals = IdList(
            p, "SELECT id, channel, sending_application, sending_facility, control_id "
               "FROM messages WHERE control_id",
            " AND received_at >= ? AND duplicate_of IS NULL AND ack_code IN (?, ?)")
        self._answer_not_delivered = IdList(
            p, "UPDATE messages SET ack_code = CASE ack_code WHEN ? THEN ? ELSE ? END, "
               "updated_at = ? WHERE id",
            " AND ack_code IN (?, ?) RETURNING id, channel, ack_code")
        self._deliveries = DeliveryWrites(
            p, MultiRowInsert("deliveries", DELIVERY_COLUMNS, p, pad=pad), self._insert_content)

    # -- writing (the writer thread only) ------------------------------------------------

    def _writer_connection(self) -> Connection:
        """The writer's own connection, opened lazily in the writer's thread."""
        if self._writer is None:
            conn = self.engine.connect()
            if self._shared:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")
                conn.exec_driver_sql(CATCH_UP_IDS)
                conn.commit()
                self._chain = AuditChain()
                self._writer = conn
                return conn
            # A batch's multi-row INSERT keeps a statement journal; past 64 KiB SQLite
            # moves it to a temporary file, created and removed in every commit.
            conn.exec_driver_sql("PRAGMA temp_store=MEMORY")
            last_id = conn.execute(select(func.max(messages.c.id))).scalar()
            last_hash = conn.execute(
                select(audit_events.c.hash).order_by(audit_events.c.id.desc()).limit(1)
            ).scalar()
            conn.rollback()
            self._next_id = (last_id or 0) + 1
            self._chain = AuditChain(last_hash or GENESIS_HASH)
            self._writer = conn
        return self._writer

    def commit_batch(
        self,
        incoming: Sequence[IncomingMessage],
        transitions: Sequence[Transition] = (),
        routings: Sequence[Routing] = (),
        outcomes: Sequence[DeliveryOutcome] = (),
        not_delivered: Sequence[int] = (),
    ) -> list[StoredMessage]:
        """Store new messages, routings, outcomes, transitions and AE answers
        (`not_delivered`, see `_answered_not_delivered`) in one transaction."""
        conn = self._writer_connection()
        assert self._chain is not None
        chain_tail = self._chain.last_hash
        next_id = self._next_id
        try:
            cursor = WriterCursor(conn, self._cursor_factory)
            try:
                stored = self._write(cursor, incoming, transitions, routings, outcomes,
                                     not_delivered)
            finally:
                cursor.close()
            conn.commit()
        except BaseException:
            conn.rollback()
            self._chain.last_hash = chain_tail
            self._next_id = next_id
            raise
        return stored

    def _write(
        self,
        cursor: WriterCursor,
        incoming: Sequence[IncomingMessage],
        transitions: Sequence[Transition],
        routings: Sequence[Routing] = (),
        outcomes: Sequence[DeliveryOutcome] = (),
        not_delivered: Sequence[int] = (),
    ) -> list[StoredMessage]:
        assert self._chain is not None
        ids = self._claim(cursor, len(incoming))
        now = now_us()
        entries: list[Entry] = []
        stored = self._receive(cursor, ids, incoming, now, entries)
        self._apply_transitions(cursor, transitions, now)
        self._deliveries.write_routings(cursor, routings, now, entries)
        self._deliveries.write_outcomes(cursor, outcomes, now, entries)
        self._answered_not_delivered(cursor, not_delivered, now, entries)
        for tr in transitions:
            entries.append((now, ENGINE_ACTOR, "message.status", tr.message_id, tr.channel,
                            status_detail(tr.status.value, tr.reason)))
        if entries:
            self._insert_audit.execute(cursor, self._chain.seal_entries(entries))
        return stored

    def _receive(
        self,
        cursor: WriterCursor,
        ids: Sequence[int],
        incoming: Sequence[IncomingMessage],
        now: int,
        entries: list[Entry],
    ) -> list[StoredMessage]:
        """Insert new messages with their raw content and ACK, each with its audit entry.

        A message the sender got no positive ACK for is rejected (ERROR); one whose key
        (channel, sending application and facility, control id) was accepted before, in
        the duplicate window or earlier in this batch, is a duplicate (FILTERED).
        """
        incoming = [fit_to_columns(msg) for msg in incoming]
        originals = self._find_originals(cursor, incoming, now)
        message_rows: list[tuple[Any, ...]] = []
        content_rows: list[tuple[Any, ...]] = []
        stored: list[StoredMessage] = []
        for mid, msg in zip(ids, incoming, strict=True):
            duplicate_of = None
            if msg.error is not None or msg.ack_code not in POSITIVE_ACKS:
                status, status_value, action = _REJECTED
            else:
                key = (msg.channel, msg.sending_application, msg.sending_facility,
                       msg.control_id)
                duplicate_of = originals.get(key) if msg.control_id else None
                if duplicate_of is None:
                    status, status_value, action = _ACCEPTED
                    if msg.control_id:
                        originals[key] = mid
                else:
                    status, status_value, action = _DUPLICATE
            message_rows.append((
                mid, msg.channel, msg.received_at, msg.peer, msg.control_id,
                msg.message_type, msg.version, msg.sending_application,
                msg.sending_facility, msg.patient_id, status_value, msg.ack_code,
                duplicate_of, msg.error, now, msg.parent_id,
            ))
            content_rows.append((mid, RAW_KIND, None, now, msg.raw))
            if msg.ack:
                content_rows.append((mid, ACK_KIND, None, now, msg.ack))
            entries.append((now, ENGINE_ACTOR, action, mid, msg.channel,
                            received_detail(status_value, msg, duplicate_of)))
            stored.append(StoredMessage(mid, msg.channel, status, duplicate_of))
        if message_rows:
            self._insert_message.execute(cursor, message_rows)
            self._insert_content.execute(cursor, content_rows)
        return stored

    def _claim(self, cursor: WriterCursor, count: int) -> Sequence[int]:
        """Ids for `count` new messages; on PostgreSQL first wait for the other writers.

        SQLite has one writing process, so ids continue an in-memory counter and the chain
        its in-memory tail. On PostgreSQL several processes write: a transaction-level
        advisory lock orders their transactions, the chain continues from the tail
        committed last, and ids come from the sequence under the lock, so they follow
        commit order across processes. Every transaction that appends audit rows calls this.
        """
        if not self._shared:
            first = self._next_id
            self._next_id += count
            return range(first, first + count)
        assert self._chain is not None
        cursor.execute(f"SELECT pg_advisory_xact_lock({WRITER_LOCK})")
        if count:
            rows = cursor.rows(self._claim_sql, (count,))
            self._chain.last_hash = rows[0][0] or GENESIS_HASH
            return sorted(row[1] for row in rows)
        tail = cursor.rows(LAST_HASH)
        self._chain.last_hash = (tail[0][0] if tail else None) or GENESIS_HASH
        return ()

    def _apply_transitions(self, cursor: WriterCursor, transitions: Sequence[Transition],
                           now: int) -> None:
        """One UPDATE per distinct (status, error) instead of one per message."""
        groups: dict[tuple[Status, str | None], list[int]] = {}
        for tr in transitions:
            groups.setdefault((tr.status, storable_or_none(tr.error)), []).append(
                tr.message_id)
        for (status, error), ids in groups.items():
            for sql, chunk in self._set_status.chunks(ids, MAX_PARAMETERS):
                cursor.execute(sql, (status.value, error, now, *chunk))

    def _answered_not_delivered(self, cursor: WriterCursor, message_ids: Sequence[int],
                                now: int, entries: list[Entry]) -> None:
        """Record that senders were answered AE (CE) after all.

        An `after_delivery` channel answers only once delivery settles, so the ACK kept
        at receipt was not what the sender got when delivery failed or timed out. The
        message's ACK code says so from now on: a resend is then a new message, routed
        again, instead of a duplicate of one the sender was told had failed. Only
        accepted messages change (once); each change is audited as `message.answered`.
        """
        if not message_ids:
            return
        changed = []
        for sql, chunk in self._answer_not_delivered.chunks(sorted(set(message_ids))):
            changed += cursor.rows(sql, ("CA", "CE", "AE", now, *chunk, *POSITIVE_ACKS))
        for mid, channel, code in sorted(changed):
            entries.append((now, ENGINE_ACTOR, "message.answered", mid, channel,
                            f'{{"ack":{json_text(code)},"reason":"not delivered"}}'))

    def _find_originals(
        self, cursor: WriterCursor, incoming: Sequence[IncomingMessage], now: int
    ) -> dict[tuple[str, str, str, str], int]:
        """Earlier accepted messages that incoming ones would duplicate, by their key."""
        control_ids = {m.control_id for m in incoming if m.control_id and m.error is None}
        if not control_ids or self.duplicate_window_us <= 0:
            return {}
        since = now - self.duplicate_window_us
        found: dict[tuple[str, str, str, str], int] = {}
        for sql, chunk in self._originals.chunks(sorted(control_ids), MAX_PARAMETERS):
            for mid, channel, app, facility, control_id in cursor.rows(
                    sql, (*chunk, since, *POSITIVE_ACKS)):
                found.setdefault((channel, app, facility, control_id), mid)
        return found

    def reprocess(self, message_ids: Sequence[int], actor: str = ENGINE_ACTOR
                  ) -> tuple[list[int], list[int]]:
        """Re-queue ERROR messages (writer thread): (re-queued, to be routed again)."""
        def requeue(conn: Connection) -> tuple[tuple[list[int], list[int]], list[AuditEvent]]:
            events: list[AuditEvent] = []
            cursor = WriterCursor(conn, self._cursor_factory)
            try:
                result = self._deliveries.requeue(cursor, message_ids, now_us(), events, actor)
            finally:
                cursor.close()
            return result, events

        return self.apply_and_audit(requeue)

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Append events that are not message changes (human actions), on the writer thread."""
        self.apply_and_audit(lambda conn: (None, events))

    def apply_and_audit(
        self, change: Callable[[Connection], tuple[T, Sequence[AuditEvent]]]
    ) -> T:
        """Run `change` and append the audit events it returns in one transaction.

        For human actions that change the store themselves (users, tokens): the change
        and its record commit together or not at all. Writer thread only.
        """
        conn = self._writer_connection()
        assert self._chain is not None
        chain_tail = self._chain.last_hash
        try:
            cursor = WriterCursor(conn, self._cursor_factory)
            try:
                self._claim(cursor, 0)
                result, events = change(conn)
                if events:
                    self._insert_audit.execute(cursor, self._chain.rows(events))
            finally:
                cursor.close()
            conn.commit()
        except BaseException:
            conn.rollback()
            self._chain.last_hash = chain_tail
            raise
        return result

    @property
    def shared(self) -> bool:
        """True when several nodes may use this store at once (PostgreSQL)."""
        return self._shared

    def close(self) -> None:
        """Close the writer's connection and the pool."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.engine.dispose()

    # -- reading -------------------------------------------------------------------------

    def pending_routing(self, limit: int = 1000, after_id: int = 0) -> list[tuple[int, str]]:
        """Messages committed but not yet routed (what recovery picks up), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(messages.c.id, messages.c.channel)
                .where(messages.c.status == Status.RECEIVED.value)
                .where(messages.c.id > after_id)
                .order_by(messages.c.id)
                .limit(limit)
            )
            return [(r.id, r.channel) for r in rows]

    def queued(self, channel: str, destination: str, *, after_id: int = 0,
               limit: int = 1000) -> list[QueuedDelivery]:
        """A destination's QUEUED deliveries after `after_id`, oldest first, with payloads."""
        with self.engine.connect() as conn:
            return fetch_queued(conn, self._marker, channel, destination, after_id, limit)

    def claim(self, channel: str, destination: str, *, node: str, after_id: int = 0,
              limit: int = 1000, lease_seconds: float = LEASE_SECONDS,
              have: Collection[int] = ()) -> Claim:
        """What a node may deliver next for one destination, how far it read, and which
        lanes are held behind a dead letter.

        One process owns a SQLite store, so there it is a plain read. On PostgreSQL the
        rows stop where a message left behind would be older than one given: not routed
        yet on some node (`routed_before`, looking back as far as a lease lasts) or routed
        after a younger one (`arrival_prefix`). Then only lanes whose lease this node holds
        are kept, and their rows are locked with SKIP LOCKED, the claim ending before the
        first skipped row (`claim_lanes`): a later message of a lane must never go first.
        Rows of lanes other nodes hold are read past (the claim's `position`), so a queue
        behind a thousand of them still reaches its own. Rows in `have` (the node holds
        them already, a read from the start going over them again) are not given again;
        only the rows given are locked and read with their payloads.
        """
        with self.engine.connect() as conn:
            m = self._marker
            if not self._shared:
                rows = fetch_queued(conn, m, channel, destination, after_id, limit)
                held = fetch_held_lanes(conn, m, channel, destination)
                conn.commit()
                position, more = claim_reach(rows, len(rows), after_id, limit)
                return Claim(rows, held, position, more)
            lease_us = int(lease_seconds * 1e6)
            floor = routed_before(conn, m, channel, now_us() - lease_us)
            read = fetch_queued(conn, m, channel, destination, after_id, limit,
                                payloads=False)
            lanes = claim_lanes(conn, m, channel, destination, arrival_prefix(read, floor),
                                node, now_us(), lease_us, have)
            fill_payloads(conn, m, destination, lanes.rows)
            held = fetch_held_lanes(conn, m, channel, destination)
            conn.commit()
            position, more = claim_reach(read, lanes.considered, after_id, limit)
            return Claim(lanes.rows, held, position, more, lanes.others)

    def renew_leases(self, channel: str, destination: str, *, node: str,
                     lanes: Iterable[str], lease_seconds: float = LEASE_SECONDS) -> set[str]:
        """Extend this node's leases of `lanes` in one statement; the lanes it still holds
        (all of them on SQLite, which takes no leases)."""
        keys = sorted(set(lanes))
        if not self._shared or not keys:
            return set(keys)
        with self.engine.connect() as conn:
            kept = renew_leases(conn, self._marker, lease_queue(channel, destination), keys,
                                node, now_us(), int(lease_seconds * 1e6))
            conn.commit()
            return kept

    def release_leases(self, channel: str, destination: str, *, node: str,
                       lanes: Iterable[str]) -> None:
        """Give up this node's leases of `lanes` (a no-op on SQLite)."""
        keys = sorted(set(lanes))
        if not self._shared or not keys:
            return
        with self.engine.connect() as conn:
            release_leases(conn, self._marker, lease_queue(channel, destination), keys, node)
            conn.commit()

    def held_lanes(self, channel: str, destination: str) -> set[str]:
        """Lanes of a destination stopped behind a dead-lettered message."""
        with self.engine.connect() as conn:
            return fetch_held_lanes(conn, self._marker, channel, destination)

    def final_deliveries(self, message_ids: Sequence[int]) -> list[tuple[int, str, str]]:
        """(message id, destination, status) of these messages' deliveries that are SENT
        or dead-lettered (ERROR), by whichever node delivered them."""
        d = schema.deliveries
        found: list[tuple[int, str, str]] = []
        with self.engine.connect() as conn:
            for start in range(0, len(message_ids), MAX_PARAMETERS):
                rows = conn.execute(
                    select(d.c.message_id, d.c.destination, d.c.status)
                    .where(d.c.message_id.in_(message_ids[start:start + MAX_PARAMETERS]),
                           d.c.status.in_((Status.SENT.value, Status.ERROR.value))))
                found += [(r[0], r[1], r[2]) for r in rows]
        return found

    def deliveries_of(self, message_id: int) -> list[dict[str, Any]]:
        """Every delivery row of one message (its per-destination states)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.deliveries)
                                .where(schema.deliveries.c.message_id == message_id)
                                .order_by(schema.deliveries.c.id))
            return [dict(r._mapping) for r in rows]

    def queue_depths(self) -> dict[tuple[str, str], int]:
        """QUEUED deliveries per (channel, destination): the queue depth operators watch."""
        d = schema.deliveries
        with self.engine.connect() as conn:
            rows = conn.execute(select(d.c.channel, d.c.destination, func.count())
                                .where(d.c.status == Status.QUEUED.value)
                                .group_by(d.c.channel, d.c.destination))
            return {(r[0], r[1]): r[2] for r in rows}

    def list_messages(
        self,
        *,
        channel: str | None = None,
        status: str | None = None,
        control_id: str | None = None,
        message_id: int | None = None,
        since_us: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Message metadata (no content) matching the filters, oldest first."""
        query = select(messages).order_by(messages.c.id)
        if channel:
            query = query.where(messages.c.channel == channel)
        if status:
            query = query.where(messages.c.status == status.upper())
        if control_id:
            query = query.where(messages.c.control_id == control_id)
        if message_id is not None:
            query = query.where(messages.c.id == message_id)
        if since_us is not None:
            query = query.where(messages.c.received_at >= since_us)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def content(self, message_id: int, kind: ContentKind = ContentKind.RAW) -> bytes | None:
        """One stored payload of a message."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(contents.c.data)
                .where(contents.c.message_id == message_id)
                .where(contents.c.kind == kind.value)
                .order_by(contents.c.id)
                .limit(1)
            ).scalar()

    def audit_trail(self, message_id: int) -> list[dict[str, Any]]:
        """Every audit event of one message, in order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(audit_events)
                .where(audit_events.c.message_id == message_id)
                .order_by(audit_events.c.id)
            )
            return [dict(r._mapping) for r in rows]

    def verify_audit(self) -> tuple[int, Any]:
        """Walk the whole audit chain; return (events checked, first break or None)."""
        with self.engine.connect() as conn:
            rows: Iterable[Any] = conn.execute(select(audit_events).order_by(audit_events.c.id))
            return verify_rows(rows)
