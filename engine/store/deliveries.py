"""The destination queues: one `deliveries` row per (message, destination).

Routing turns a RECEIVED message into QUEUED deliveries (or FILTERED / ERROR) in one
transaction with its encoded payloads; delivery outcomes move those rows on and keep the
message's own status the summary of its deliveries. Everything here runs inside the
writer's transaction (`write_*`) or on a reader connection (`fetch_*`), never on the
reactor thread.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection

from engine.audit import AuditEvent, Entry, json_text
from engine.store.schema import deliveries as deliveries_table
from engine.store.status import ContentKind, Status
from engine.store.text import storable, storable_or_none

ENGINE_ACTOR = "engine"
QUEUED, SENT, FILTERED = Status.QUEUED.value, Status.SENT.value, Status.FILTERED.value
RECEIVED = Status.RECEIVED.value
ENCODED_KIND, RESPONSE_KIND = ContentKind.ENCODED.value, ContentKind.RESPONSE.value
IN_LIST_CHUNK = 10000
"""Ids per `IN (…)` list in one statement (well under every driver's parameter limit)."""


class Statements(Protocol):
    """The writer transaction's statements, as the store's `WriterCursor` runs them."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; how many rows it changed."""

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a query (or a statement with RETURNING); all its rows."""


class Placeholders:
    """Writes a statement's `?` placeholders the way the writer's cursor takes them.

    Statements are written once with `?`. sqlite3 takes them as they are; a `format`
    driver takes `%s`; psycopg's raw cursor takes PostgreSQL's own `$1, $2, …` and sends
    the text as written, where its ordinary cursor parses a statement of more than 50
    parameters in Python on every execution (every multi-row insert of the writer).
    """

    STYLES = ("qmark", "format", "pyformat", "numeric_dollar")

    def __init__(self, style: str) -> None:
        if style not in self.STYLES:
            raise ValueError(f"unsupported DB-API paramstyle {style!r}: "
                             "the store needs qmark, format, pyformat or numeric_dollar")
        self.style = style

    def __call__(self, sql: str) -> str:
        """The statement with this style's placeholders (its text holds no other `?`)."""
        if self.style == "qmark":
            return sql
        if self.style == "numeric_dollar":
            first, *rest = sql.split("?")
            return first + "".join(f"${n}{part}" for n, part in enumerate(rest, 1))
        return sql.replace("?", "%s")


def statement_rows(count: int, limit: int) -> int:
    """How many rows (or ids) a statement for `count` of them is written for.

    The next of 1, 2, 3, 4, 6, 8, 12, 16, 24, … at or above `count`, at most `limit`.
    Batches vary in size from one commit to the next; a statement text per exact size
    misses the driver's statement cache nearly every time, and SQLite spends ~150 µs
    compiling a 50-row insert. On this ladder a few dozen texts serve every batch, at
    the cost of at most half as many again padding rows (or repeated ids), which are
    far cheaper than a compile.
    """
    if count <= 2:
        return min(count, limit)
    power = 1 << (count - 1).bit_length()
    size = power * 3 // 4 if power * 3 // 4 >= count else power
    return min(size, limit)


class IdList:
    """A statement whose ids go in an `IN (…)` list, its text built once per list length.

    Lists are padded to `statement_rows` lengths by repeating their last id (harmless in
    an `IN` list), so the writer sends a few shapes batch after batch; lengths past
    `CACHED_LENGTHS` (rare, large reprocessing runs) are built each time.
    """

    CACHED_LENGTHS = 1024

    def __init__(self, placeholders: Placeholders, head: str, tail: str = "") -> None:
        self._placeholders = placeholders
        self._head = head
        self._tail = tail
        self._sql: dict[int, str] = {}

    def statement(self, ids: int) -> str:
        """The statement for a list of `ids` ids."""
        sql = self._sql.get(ids)
        if sql is None:
            sql = self._placeholders(f"{self._head} IN ({', '.join(['?'] * ids)}){self._tail}")
            if ids <= self.CACHED_LENGTHS:
                self._sql[ids] = sql
        return sql

    def chunks(self, ids: Sequence[Any], size: int = IN_LIST_CHUNK
               ) -> Iterable[tuple[str, Sequence[Any]]]:
        """(statement, ids) for each run of at most `size` ids, in order, padded."""
        for start in range(0, len(ids), size):
            chunk = list(ids[start:start + size])
            padding = statement_rows(len(chunk), size) - len(chunk)
            if padding:
                chunk.extend([chunk[-1]] * padding)
            yield self.statement(len(chunk)), chunk


def status_detail(status: str, reason: str = "") -> str:
    """The detail JSON of a `message.status` event, as `detail_json` writes it."""
    if reason:
        return f'{{"status":{json_text(status)},"reason":{json_text(reason)}}}'
    return f'{{"status":{json_text(status)}}}'


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """One destination's share of a routed message: its payload and its lane."""

    destination: str
    payload: bytes | None
    lane_key: str = ""
    status: Status = Status.QUEUED
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Routing:
    """What the pipeline decided for one committed message."""

    message_id: int
    channel: str
    status: Status
    reason: str = ""
    error: str | None = None
    deliveries: Sequence[NewDelivery] = ()


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """The result of one delivery attempt, as the queue decided to record it."""

    delivery_id: int
    message_id: int
    channel: str
    destination: str
    status: Status
    attempts: int
    next_attempt_at: int
    first_attempt_at: int | None
    error: str | None = None
    detail: str = ""
    response: bytes | None = None
    held: bool = False


@dataclass(slots=True)
class QueuedDelivery:
    """A QUEUED row as a destination queue works on it."""

    id: int
    message_id: int
    channel: str
    destination: str
    lane_key: str
    attempts: int
    next_attempt_at: int
    first_attempt_at: int | None
    control_id: str = ""
    message_type: str = ""
    received_at: int = 0
    payload: bytes | None = field(default=None, repr=False)


LANE_KEY_LENGTH: int = deliveries_table.c.lane_key.type.length  # type: ignore[attr-defined]


def summarise(statuses: Iterable[str]) -> Status:
    """A message's status from its deliveries' statuses (promise 2's visible states)."""
    seen = set(statuses)
    for status in (Status.QUEUED, Status.ERROR, Status.SENT):
        if status.value in seen:
            return status
    return Status.FILTERED


class DeliveryWrites:
    """Statements for routing and outcomes, bound to the store's parameter style."""

    def __init__(self, placeholders: Placeholders, insert_delivery: Any,
                 insert_content: Any) -> None:
        p = placeholders
        self._insert_delivery = insert_delivery
        self._insert_content = insert_content
        self._route = IdList(
            p, "UPDATE messages SET status = ?, error = ?, updated_at = ? WHERE id",
            " AND status = ? RETURNING id")
        self._sent_first_time = IdList(
            p, "UPDATE deliveries SET status = ?, attempts = 1, next_attempt_at = ?, "
               "first_attempt_at = COALESCE(first_attempt_at, ?), held = 0, "
               "last_error = NULL, updated_at = ? WHERE id")
        self._all_sent_sql = IdList(
            p, "UPDATE messages SET status = ?, updated_at = ? WHERE id",
            " AND status <> ? AND NOT EXISTS (SELECT 1 FROM deliveries d "
            "WHERE d.message_id = messages.id AND d.status NOT IN (?, ?)) RETURNING id")
        self._delivery_statuses = IdList(
            p, "SELECT message_id, status FROM deliveries WHERE message_id")
        self._message_statuses = IdList(p, "SELECT id, status FROM messages WHERE id")
        self._update_delivery = p(
            "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?, "
            "first_attempt_at = ?, held = ?, last_error = ?, updated_at = ? WHERE id = ?")
        self._set_summary = p("UPDATE messages SET status = ?, updated_at = ? WHERE id = ?")
        self._read_for_requeue = p(
            "SELECT channel, status, ack_code FROM messages WHERE id = ?")
        self._requeue_deliveries = p(
            "UPDATE deliveries SET status = ?, attempts = 0, next_attempt_at = ?, "
            "first_attempt_at = NULL, held = 0, updated_at = ? "
            "WHERE message_id = ? AND status = ?")
        self._requeue_message = p(
            "UPDATE messages SET status = ?, error = NULL, updated_at = ? WHERE id = ?")

    def write_routings(self, cursor: Statements, routings: Sequence[Routing], now: int,
                       entries: list[Entry]) -> None:
        """Set each message's status and queue its deliveries with their payloads.

        Only a message still RECEIVED is routed: on a shared store a node starting up
        routes every RECEIVED message (`Router.recover`), also ones a live node is
        routing at the same time. The writers' transactions take turns, so the second
        routing of a message finds it routed and is dropped: one set of deliveries.
        """
        by_status: dict[tuple[Status, str | None], list[int]] = {}
        for r in routings:
            by_status.setdefault((r.status, storable_or_none(r.error)), []).append(
                r.message_id)
        # One statement per distinct outcome (nearly always just QUEUED), not one per row:
        # each statement step may wait for the interpreter lock behind the reactor.
        routed: set[int] = set()
        for (status_, error), ids in by_status.items():
            for sql, chunk in self._route.chunks(ids):
                routed.update(row[0] for row in cursor.rows(
                    sql, (status_.value, error, now, *chunk, RECEIVED)))
        delivery_rows: list[tuple[Any, ...]] = []
        content_rows: list[tuple[Any, ...]] = []
        for r in routings:
            if r.message_id not in routed:
                continue
            for d in r.deliveries:
                status = d.status.value
                delivery_rows.append((r.message_id, r.channel, d.destination, status,
                                      storable(d.lane_key, LANE_KEY_LENGTH), 0, now, None, 0,
                                      storable(d.reason) or None, now))
                if d.payload is not None and status == QUEUED:
                    content_rows.append((r.message_id, ENCODED_KIND, d.destination, now,
                                         d.payload))
            entries.append((now, ENGINE_ACTOR, "message.routed", r.message_id, r.channel,
                            routed_detail(r)))
        if delivery_rows:
            self._insert_delivery.execute(cursor, delivery_rows)
        if content_rows:
            self._insert_content.execute(cursor, content_rows)

    def write_outcomes(self, cursor: Statements, outcomes: Sequence[DeliveryOutcome],
                       now: int, entries: list[Entry]) -> None:
        """Move deliveries on, keep responses, and re-summarise their messages."""
        if not outcomes:
            return
        sent_first_time: list[int] = []
        others: list[tuple[Any, ...]] = []
        responses: list[tuple[Any, ...]] = []
        sent: set[int] = set()
        for o in outcomes:
            status = o.status.value
            if status == SENT:
                sent.add(o.message_id)
            if status == SENT and o.attempts == 1:
                sent_first_time.append(o.delivery_id)
            else:
                others.append((status, o.attempts, o.next_attempt_at, o.first_attempt_at,
                               1 if o.held else 0, storable_or_none(o.error), now,
                               o.delivery_id))
            if o.response is not None:
                responses.append((o.message_id, RESPONSE_KIND, o.destination, now,
                                  o.response))
            entries.append((now, ENGINE_ACTOR, f"delivery.{status.lower()}", o.message_id,
                            o.channel, outcome_detail(o, status)))
        # The common outcome (delivered at the first attempt) in one statement per chunk.
        for sql, chunk in self._sent_first_time.chunks(sent_first_time):
            cursor.execute(sql, (SENT, now, now, now, *chunk))
        if others:
            cursor.executemany(self._update_delivery, others)
        if responses:
            self._insert_content.execute(cursor, responses)
        touched = {o.message_id: o.channel for o in outcomes}
        sent_detail = status_detail(SENT)
        for mid in self._all_sent(cursor, sorted(sent), now):
            entries.append((now, ENGINE_ACTOR, "message.status", mid, touched.pop(mid),
                            sent_detail))
        self.resummarise(cursor, touched, now, entries)

    def _all_sent(self, cursor: Statements, ids: list[int], now: int) -> list[int]:
        """Mark SENT the messages whose deliveries are now all done; returns their ids.

        One statement for the usual case (every destination delivered); anything else
        is left to `resummarise`.
        """
        done: list[int] = []
        for sql, chunk in self._all_sent_sql.chunks(ids):
            rows = cursor.rows(sql, (SENT, now, *chunk, SENT, SENT, FILTERED))
            done.extend(sorted(r[0] for r in rows))
        return done

    def resummarise(self, cursor: Statements, message_channels: dict[int, str], now: int,
                    entries: list[Entry]) -> None:
        """Bring each message's status in line with its deliveries; audit real changes."""
        ids = sorted(message_channels)
        by_message: dict[int, list[str]] = {}
        current: dict[int, str] = {}
        for sql, chunk in self._delivery_statuses.chunks(ids):
            for mid, status in cursor.rows(sql, tuple(chunk)):
                by_message.setdefault(mid, []).append(status)
        for sql, chunk in self._message_statuses.chunks(ids):
            for mid, status in cursor.rows(sql, tuple(chunk)):
                current[mid] = status
        changes = []
        for mid in ids:
            if mid not in by_message:
                continue
            status = summarise(by_message[mid]).value
            if current.get(mid) != status:
                changes.append((status, now, mid))
                entries.append((now, ENGINE_ACTOR, "message.status", mid,
                                message_channels[mid], status_detail(status)))
        if changes:
            cursor.executemany(self._set_summary, changes)

    def requeue(self, cursor: Statements, message_ids: Sequence[int], now: int,
                events: list[AuditEvent], actor: str) -> tuple[list[int], list[int]]:
        """Reprocess ERROR messages: (re-queued, set back to RECEIVED to route again).

        Dead-lettered deliveries go back to their queue. An accepted message that never
        reached a queue (a transformer step failed) is routed again. Messages rejected at
        the door (AR/AE) and messages in any other state are left as they are.
        """
        requeued: list[int] = []
        reroute: list[int] = []
        for mid in message_ids:
            found = cursor.rows(self._read_for_requeue, (mid,))
            if not found:
                continue
            channel, status, ack = found[0]
            if status != Status.ERROR.value:
                continue
            changed = cursor.execute(self._requeue_deliveries,
                                     (Status.QUEUED.value, now, now, mid, Status.ERROR.value))
            if changed:
                new_status = Status.QUEUED
                requeued.append(mid)
            elif ack in ("AA", "CA"):
                new_status = Status.RECEIVED
                reroute.append(mid)
            else:
                continue
            cursor.execute(self._requeue_message, (new_status.value, now, mid))
            events.append(AuditEvent(now, actor, "message.reprocess", mid, channel,
                                     {"status": new_status.value}))
        return requeued, reroute


def routed_detail(r: Routing) -> str:
    """The detail JSON of a `message.routed` event, as `detail_json` writes it."""
    detail = f'{{"status":{json_text(r.status.value)}'
    if r.reason:
        detail += f',"reason":{json_text(r.reason)}'
    queued = [d.destination for d in r.deliveries if d.status is Status.QUEUED]
    if queued:
        detail += f',"queued":{json_text(",".join(queued))}'
    filtered = [d.destination for d in r.deliveries if d.status is Status.FILTERED]
    if filtered:
        detail += f',"filtered":{json_text(",".join(filtered))}'
    return detail + "}"


def outcome_detail(o: DeliveryOutcome, status: str) -> str:
    """The detail JSON of a `delivery.*` event, as `detail_json` writes it."""
    detail = (f'{{"destination":{json_text(o.destination)},"status":{json_text(status)},'
              f'"attempt":{o.attempts}')
    if o.detail:
        detail += f',"detail":{json_text(o.detail)}'
    if o.held:
        detail += ',"held":1'
    return detail + "}"


def fetch_queued(conn: Connection, marker: str, channel: str, destination: str,
                 after_id: int, limit: int, *, payloads: bool = True) -> list[QueuedDelivery]:
    """QUEUED rows of one destination after `after_id`, in arrival order, with payloads
    unless `payloads` is false (`fill_payloads` adds them to the rows a claim keeps)."""
    m = marker
    payload, contents_join = "NULL", ""
    if payloads:
        payload = "c.data"
        contents_join = ("LEFT JOIN contents c ON c.message_id = d.message_id "
                         "AND c.kind = 'encoded' AND c.destination = d.destination ")
    rows = conn.exec_driver_sql(
        "SELECT d.id, d.message_id, d.channel, d.lane_key, d.attempts, d.next_attempt_at, "
        f"d.first_attempt_at, msg.control_id, msg.message_type, msg.received_at, {payload} "
        "FROM deliveries d JOIN messages msg ON msg.id = d.message_id "
        f"{contents_join}"
        f"WHERE d.destination = {m} AND d.channel = {m} AND d.status = {m} AND d.id > {m} "
        f"ORDER BY d.id LIMIT {m}",
        (destination, channel, Status.QUEUED.value, after_id, limit))
    return [QueuedDelivery(r[0], r[1], r[2], destination, r[3], r[4], r[5], r[6], r[7], r[8],
                           r[9], None if r[10] is None else bytes(r[10])) for r in rows]


def fill_payloads(conn: Connection, marker: str, destination: str,
                  rows: list[QueuedDelivery]) -> None:
    """Give claimed rows their encoded payloads (PostgreSQL: one array parameter).

    A claim on a shared store reads past rows of other nodes' lanes; only the rows it
    keeps need their payloads, so those are read in a second statement.
    """
    if not rows:
        return
    m = marker
    found = dict(conn.exec_driver_sql(
        "SELECT message_id, data FROM contents "
        f"WHERE kind = 'encoded' AND destination = {m} AND message_id = ANY({m})",
        (destination, [r.message_id for r in rows])).all())
    for r in rows:
        data = found.get(r.message_id)
        r.payload = None if data is None else bytes(data)


def fetch_held_lanes(conn: Connection, marker: str, channel: str,
                     destination: str) -> set[str]:
    """Lanes stopped behind a dead-lettered message (`on_exhausted: hold`)."""
    m = marker
    rows = conn.exec_driver_sql(
        f"SELECT DISTINCT lane_key FROM deliveries WHERE destination = {m} AND channel = {m} "
        f"AND status = {m} AND held = 1", (destination, channel, Status.ERROR.value))
    return {r[0] for r in rows}


LEASE_SECONDS = 30.0
"""How long a lane stays with a node that stops renewing its lease (crashed, stalled)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What one read of a destination's queue gives a node.

    `position` is how far the read got: every QUEUED row after the read's start up to it
    is in `rows`, was held by the queue already (`have`) or belongs to a lane another node
    holds (`others`), so the queue's cursor may move there; rows of such lanes come back
    at a read from the start. `more` says the read
    stopped at its limit, not at the end of the queue or at a cut, so there may be rows
    further on.
    """

    rows: list[QueuedDelivery]
    held: set[str]
    """Lanes stopped behind a dead letter (`on_exhausted: hold`)."""
    position: int
    more: bool
    others: set[str] = field(default_factory=set)
    """Lanes of the rows read whose lease another node holds."""


@dataclass(frozen=True, slots=True)
class LaneClaim:
    """`claim_lanes`' answer: the rows kept, the lanes other nodes hold, and how many of
    the rows given were gone through before the first row another transaction locked."""

    rows: list[QueuedDelivery]
    others: set[str]
    considered: int


def claim_reach(read: list[QueuedDelivery], considered: int, after_id: int,
                limit: int) -> tuple[int, bool]:
    """A claim's `position` and `more`: up to the last of the first `considered` rows read
    (those before any cut), reading on only when no row was cut and the read was full."""
    position = read[considered - 1].id if considered else after_id
    return position, considered == len(read) and len(read) >= limit


def lease_queue(channel: str, destination: str) -> str:
    """A destination's name in `lane_leases`."""
    return f"{channel}/{destination}"


def claim_lanes(conn: Connection, marker: str, channel: str, destination: str,
                rows: list[QueuedDelivery], node: str, now: int, lease_us: int,
                have: Collection[int] = ()) -> LaneClaim:
    """Keep only rows of lanes this node holds, taking or renewing each lane's lease.

    Several nodes share one PostgreSQL: an ordered lane is delivered by one node at a
    time. A lease is taken when free or expired and renewed while the node has work in it
    (here for every lane read, and by the queue's `renew_leases`); a node that dies loses
    its lanes when their leases expire, one that drains a lane releases it
    (`release_leases`). The rows of held lanes are then locked with `FOR UPDATE SKIP
    LOCKED` for the rest of the claim's transaction, so two nodes meeting at a lease's
    expiry never both take a row. The claim ends before the first skipped row (rows
    arrive in id order): the queue's cursor must not pass it, or a lane cut there and
    continued in a later claim would send that lane's later rows ahead of the skipped one.
    Rows in `have` (the queue holds them already) are neither locked nor kept again; rows
    that the lane's previous holder settled since they were read are left out
    (`lock_rows`).
    """
    keys = sorted({r.lane_key for r in rows})
    if not keys:
        return LaneClaim([], set(), 0)
    held = take_leases(conn, marker, lease_queue(channel, destination), keys, node, now,
                       lease_us)
    others = set(keys) - held
    mine = [r.id for r in rows if r.lane_key in held and r.id not in have]
    if not mine:
        return LaneClaim([], others, len(rows))
    locked = lock_rows(conn, marker, mine)
    claimed = []
    for i, r in enumerate(rows):
        if r.lane_key not in held or r.id in have:
            continue
        if r.id not in locked:
            return LaneClaim(claimed, others, i)
        now_row = locked[r.id]
        if now_row[0] != QUEUED:
            continue
        r.attempts, r.next_attempt_at, r.first_attempt_at = now_row[1:]
        claimed.append(r)
    return LaneClaim(claimed, others, len(rows))


def lock_rows(conn: Connection, marker: str,
              ids: list[int]) -> dict[int, tuple[str, int, int, int | None]]:
    """Lock the rows no other transaction holds; each one's status, attempts,
    next_attempt_at and first_attempt_at as they are now.

    The rows were read before the claim took their lanes' leases, and in between the
    node that held a lane may have sent a row, recorded it and released the lane: the
    read still has it QUEUED. The lock reads the row's latest version, so such a row is
    seen SENT (or retried later, with more attempts) and is not sent a second time.
    """
    m = marker
    return {row[0]: (row[1], row[2], row[3], row[4]) for row in conn.exec_driver_sql(
        "SELECT id, status, attempts, next_attempt_at, first_attempt_at FROM deliveries "
        f"WHERE id = ANY({m}) FOR UPDATE SKIP LOCKED", (ids,))}


def take_leases(conn: Connection, marker: str, queue: str, keys: list[str], node: str,
                now: int, lease_us: int) -> set[str]:
    """Take or renew the leases of `keys` (free, expired or this node's) in one statement;
    the keys this node now holds. Rows are locked in key order, as every node does, so
    two claims never wait on each other in a cycle."""
    m = marker
    return {row[0] for row in conn.exec_driver_sql(
        "INSERT INTO lane_leases (destination, lane_key, node, expires_at) "
        f"SELECT {m}, k, {m}, {m} FROM unnest({m}::text[]) AS k ORDER BY k "
        "ON CONFLICT (destination, lane_key) DO UPDATE "
        "SET node = excluded.node, expires_at = excluded.expires_at "
        f"WHERE lane_leases.node = excluded.node OR lane_leases.expires_at < {m} "
        "RETURNING lane_key", (queue, node, now + lease_us, keys, now))}


def renew_leases(conn: Connection, marker: str, queue: str, keys: list[str], node: str,
                 now: int, lease_us: int) -> set[str]:
    """Extend this node's leases of `keys`; the keys it still holds.

    A lease that ran out but that no other node took is still this node's to renew: no
    one else can have sent from the lane meanwhile. One that another node took, or took
    and released, is gone.
    """
    m = marker
    return {row[0] for row in conn.exec_driver_sql(
        f"UPDATE lane_leases SET expires_at = {m} WHERE destination = {m} AND lane_key IN "
        f"({_OWN_LEASES.format(m=m)}) RETURNING lane_key",
        (now + lease_us, queue, queue, node, keys))}


def release_leases(conn: Connection, marker: str, queue: str, keys: list[str],
                   node: str) -> None:
    """Give up this node's leases of `keys` (only those it holds), so another node can
    take those lanes at its next read instead of waiting for the leases to expire."""
    m = marker
    conn.exec_driver_sql(
        f"DELETE FROM lane_leases WHERE destination = {m} AND lane_key IN "
        f"({_OWN_LEASES.format(m=m)})", (queue, queue, node, keys))


_OWN_LEASES = ("SELECT lane_key FROM lane_leases WHERE destination = {m} AND node = {m} "
               "AND lane_key = ANY({m}) ORDER BY lane_key FOR UPDATE")
"""This node's leases among some keys, locked in key order like every claim's."""


def routed_before(conn: Connection, marker: str, channel: str, since: int) -> int | None:
    """The oldest message of a channel received since `since` and not routed yet.

    Several nodes: a node routes a message in a transaction after the one that stored it,
    so another node may store and route a later message in between, and that message's
    delivery row gets the lower id. A claim takes only rows of messages older than this
    one (read before the rows, so everything routed by then is in them); see
    `arrival_prefix`.
    """
    m = marker
    return conn.exec_driver_sql(
        f"SELECT min(id) FROM messages WHERE channel = {m} AND status = {m} "
        f"AND received_at >= {m}", (channel, Status.RECEIVED.value, since)).scalar()


def arrival_prefix(rows: list[QueuedDelivery], floor: int | None) -> list[QueuedDelivery]:
    """The longest run of rows from the first (they come in delivery id order) that no
    message left behind is older than: no row after the run, and no message not yet
    routed (`floor`, the oldest such message id, or None).

    The queue's cursor may move to the last row of the run, so a row left out comes back
    in a later claim; one older than a row already given would then be sent after it.
    """
    after = [0] * (len(rows) + 1)
    after[len(rows)] = floor if floor is not None else 1 << 62
    for i in range(len(rows) - 1, -1, -1):
        after[i] = min(rows[i].message_id, after[i + 1])
    best, newest = 0, 0
    for i, row in enumerate(rows, 1):
        newest = max(newest, row.message_id)
        if newest < after[i]:
            best = i
    return rows[:best]
