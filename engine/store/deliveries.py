"""The destination queues: one `deliveries` row per (message, destination).

Routing turns a RECEIVED message into QUEUED deliveries (or FILTERED / ERROR) in one
transaction with its encoded payloads; delivery outcomes move those rows on and keep the
message's own status the summary of its deliveries. Everything here runs inside the
writer's transaction (`write_*`) or on a reader connection (`fetch_*`), never on the
reactor thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from engine.audit import AuditEvent
from engine.store.status import ContentKind, Status

ENGINE_ACTOR = "engine"


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


def summarise(statuses: Iterable[str]) -> Status:
    """A message's status from its deliveries' statuses (promise 2's visible states)."""
    seen = set(statuses)
    for status in (Status.QUEUED, Status.ERROR, Status.SENT):
        if status.value in seen:
            return status
    return Status.FILTERED


class DeliveryWrites:
    """Statements for routing and outcomes, bound to the store's parameter style."""

    def __init__(self, marker: str, insert_delivery: Any, insert_content: Any) -> None:
        self._m = marker
        self._insert_delivery = insert_delivery
        self._insert_content = insert_content

    def _markers(self, n: int) -> str:
        return ", ".join([self._m] * n)

    def write_routings(self, conn: Connection, routings: Sequence[Routing], now: int,
                       events: list[AuditEvent]) -> None:
        """Set each message's status and queue its deliveries with their payloads."""
        m = self._m
        delivery_rows: list[tuple[Any, ...]] = []
        content_rows: list[tuple[Any, ...]] = []
        by_status: dict[tuple[str, str | None], list[int]] = {}
        encoded = ContentKind.ENCODED.value
        for r in routings:
            by_status.setdefault((r.status.value, r.error), []).append(r.message_id)
            for d in r.deliveries:
                delivery_rows.append((r.message_id, r.channel, d.destination, d.status.value,
                                      d.lane_key, 0, now, None, 0, d.reason or None, now))
                if d.payload is not None and d.status is Status.QUEUED:
                    content_rows.append((r.message_id, encoded, d.destination, now, d.payload))
            detail: dict[str, Any] = {"status": r.status.value}
            if r.reason:
                detail["reason"] = r.reason
            queued = [d.destination for d in r.deliveries if d.status is Status.QUEUED]
            if queued:
                detail["queued"] = ",".join(queued)
            filtered = [d.destination for d in r.deliveries if d.status is Status.FILTERED]
            if filtered:
                detail["filtered"] = ",".join(filtered)
            events.append(AuditEvent(now, ENGINE_ACTOR, "message.routed", r.message_id,
                                     r.channel, detail))
        # One statement per distinct outcome (nearly always just QUEUED), not one per row:
        # each statement step may wait for the interpreter lock behind the reactor.
        for (status, error), ids in by_status.items():
            for start in range(0, len(ids), 10000):
                chunk = ids[start:start + 10000]
                conn.exec_driver_sql(
                    f"UPDATE messages SET status = {m}, error = {m}, updated_at = {m} "
                    f"WHERE id IN ({self._markers(len(chunk))})", (status, error, now, *chunk))
        if delivery_rows:
            self._insert_delivery.execute(conn, delivery_rows)
        if content_rows:
            self._insert_content.execute(conn, content_rows)

    def write_outcomes(self, conn: Connection, outcomes: Sequence[DeliveryOutcome], now: int,
                       events: list[AuditEvent]) -> None:
        """Move deliveries on, keep responses, and re-summarise their messages."""
        if not outcomes:
            return
        m = self._m
        sent_first_time = [o for o in outcomes if o.status is Status.SENT and o.attempts == 1]
        others = [o for o in outcomes if not (o.status is Status.SENT and o.attempts == 1)]
        # The common outcome (delivered at the first attempt) in one statement per chunk.
        for start in range(0, len(sent_first_time), 10000):
            chunk = sent_first_time[start:start + 10000]
            conn.exec_driver_sql(
                f"UPDATE deliveries SET status = {m}, attempts = 1, next_attempt_at = {m}, "
                f"first_attempt_at = COALESCE(first_attempt_at, {m}), held = 0, "
                f"last_error = NULL, updated_at = {m} "
                f"WHERE id IN ({self._markers(len(chunk))})",
                (Status.SENT.value, now, now, now, *(o.delivery_id for o in chunk)))
        if others:
            conn.exec_driver_sql(
                f"UPDATE deliveries SET status = {m}, attempts = {m}, next_attempt_at = {m}, "
                f"first_attempt_at = {m}, held = {m}, last_error = {m}, updated_at = {m} "
                f"WHERE id = {m}",
                [(o.status.value, o.attempts, o.next_attempt_at, o.first_attempt_at,
                  1 if o.held else 0, o.error, now, o.delivery_id) for o in others])
        responses = [(o.message_id, ContentKind.RESPONSE.value, o.destination, now, o.response)
                     for o in outcomes if o.response is not None]
        if responses:
            self._insert_content.execute(conn, responses)
        for o in outcomes:
            detail: dict[str, Any] = {"destination": o.destination, "status": o.status.value,
                                      "attempt": o.attempts}
            if o.detail:
                detail["detail"] = o.detail
            if o.held:
                detail["held"] = 1
            events.append(AuditEvent(now, ENGINE_ACTOR, "delivery." + o.status.value.lower(),
                                     o.message_id, o.channel, detail))
        touched = {o.message_id: o.channel for o in outcomes}
        for mid in self._all_sent(conn, sorted({o.message_id for o in outcomes
                                                if o.status is Status.SENT}), now):
            events.append(AuditEvent(now, ENGINE_ACTOR, "message.status", mid,
                                     touched.pop(mid), {"status": Status.SENT.value}))
        self.resummarise(conn, touched, now, events)

    def _all_sent(self, conn: Connection, ids: list[int], now: int) -> list[int]:
        """Mark SENT the messages whose deliveries are now all done; returns their ids.

        One statement for the usual case (every destination delivered); anything else
        is left to `resummarise`.
        """
        m = self._m
        done: list[int] = []
        for start in range(0, len(ids), 10000):
            chunk = ids[start:start + 10000]
            rows = conn.exec_driver_sql(
                f"UPDATE messages SET status = {m}, updated_at = {m} "
                f"WHERE id IN ({self._markers(len(chunk))}) AND status <> {m} "
                "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id "
                f"AND d.status NOT IN ({m}, {m})) RETURNING id",
                (Status.SENT.value, now, *chunk, Status.SENT.value, Status.SENT.value,
                 Status.FILTERED.value))
            done.extend(sorted(r[0] for r in rows))
        return done

    def resummarise(self, conn: Connection, message_channels: dict[int, str], now: int,
                    events: list[AuditEvent]) -> None:
        """Bring each message's status in line with its deliveries; audit real changes."""
        ids = sorted(message_channels)
        m = self._m
        by_message: dict[int, list[str]] = {}
        current: dict[int, str] = {}
        for start in range(0, len(ids), 10000):
            chunk = ids[start:start + 10000]
            marks = self._markers(len(chunk))
            for mid, status in conn.exec_driver_sql(
                    f"SELECT message_id, status FROM deliveries WHERE message_id IN ({marks})",
                    tuple(chunk)):
                by_message.setdefault(mid, []).append(status)
            for mid, status in conn.exec_driver_sql(
                    f"SELECT id, status FROM messages WHERE id IN ({marks})", tuple(chunk)):
                current[mid] = status
        changes = []
        for mid in ids:
            if mid not in by_message:
                continue
            status = summarise(by_message[mid])
            if current.get(mid) != status.value:
                changes.append((status.value, now, mid))
                events.append(AuditEvent(now, ENGINE_ACTOR, "message.status", mid,
                                         message_channels[mid], {"status": status.value}))
        if changes:
            conn.exec_driver_sql(
                f"UPDATE messages SET status = {m}, updated_at = {m} WHERE id = {m}", changes)

    def requeue(self, conn: Connection, message_ids: Sequence[int], now: int,
                events: list[AuditEvent], actor: str) -> tuple[list[int], list[int]]:
        """Reprocess ERROR messages: (re-queued, set back to RECEIVED to route again).

        Dead-lettered deliveries go back to their queue. An accepted message that never
        reached a queue (a transformer step failed) is routed again. Messages rejected at
        the door (AR/AE) and messages in any other state are left as they are.
        """
        m = self._m
        requeued: list[int] = []
        reroute: list[int] = []
        for mid in message_ids:
            row = conn.exec_driver_sql(
                f"SELECT channel, status, ack_code FROM messages WHERE id = {m}", (mid,)
            ).first()
            if row is None:
                continue
            channel, status, ack = row
            if status != Status.ERROR.value:
                continue
            changed = conn.exec_driver_sql(
                f"UPDATE deliveries SET status = {m}, attempts = 0, next_attempt_at = {m}, "
                f"first_attempt_at = NULL, held = 0, updated_at = {m} "
                f"WHERE message_id = {m} AND status = {m}",
                (Status.QUEUED.value, now, now, mid, Status.ERROR.value)).rowcount
            if changed:
                new_status = Status.QUEUED
                requeued.append(mid)
            elif ack in ("AA", "CA"):
                new_status = Status.RECEIVED
                reroute.append(mid)
            else:
                continue
            conn.exec_driver_sql(
                f"UPDATE messages SET status = {m}, error = NULL, updated_at = {m} "
                f"WHERE id = {m}", (new_status.value, now, mid))
            events.append(AuditEvent(now, actor, "message.reprocess", mid, channel,
                                     {"status": new_status.value}))
        return requeued, reroute


def fetch_queued(conn: Connection, marker: str, channel: str, destination: str,
                 after_id: int, limit: int) -> list[QueuedDelivery]:
    """QUEUED rows of one destination after `after_id`, in arrival order, with payloads."""
    m = marker
    rows = conn.exec_driver_sql(
        "SELECT d.id, d.message_id, d.channel, d.lane_key, d.attempts, d.next_attempt_at, "
        "d.first_attempt_at, msg.control_id, msg.message_type, msg.received_at, c.data "
        "FROM deliveries d JOIN messages msg ON msg.id = d.message_id "
        "LEFT JOIN contents c ON c.message_id = d.message_id AND c.kind = 'encoded' "
        "AND c.destination = d.destination "
        f"WHERE d.destination = {m} AND d.channel = {m} AND d.status = {m} AND d.id > {m} "
        f"ORDER BY d.id LIMIT {m}",
        (destination, channel, Status.QUEUED.value, after_id, limit))
    return [QueuedDelivery(r[0], r[1], r[2], destination, r[3], r[4], r[5], r[6], r[7], r[8],
                           r[9], None if r[10] is None else bytes(r[10])) for r in rows]


def fetch_held_lanes(conn: Connection, marker: str, channel: str,
                     destination: str) -> set[str]:
    """Lanes stopped behind a dead-lettered message (`on_exhausted: hold`)."""
    m = marker
    rows = conn.exec_driver_sql(
        f"SELECT DISTINCT lane_key FROM deliveries WHERE destination = {m} AND channel = {m} "
        f"AND status = {m} AND held = 1", (destination, channel, Status.ERROR.value))
    return {r[0] for r in rows}


def claim_lanes(conn: Connection, marker: str, channel: str, destination: str,
                rows: list[QueuedDelivery], node: str, now: int,
                lease_us: int) -> list[QueuedDelivery]:
    """Keep only rows of lanes this node holds, taking or renewing each lane's lease.

    Several nodes share one PostgreSQL: an ordered lane is delivered by one node at a
    time. A lease is taken when free or expired and renewed while the node has work in it;
    a node that dies loses its lanes when their leases expire. The rows of held lanes are
    then locked with `FOR UPDATE SKIP LOCKED` for the rest of the claim's transaction, so
    two nodes meeting at a lease's expiry never both take a row. The claim ends before
    the first skipped row (rows arrive in id order): the queue's cursor moves to the last
    row it got, so a lane cut there and continued in a later claim would send that lane's
    later rows ahead of the skipped one.
    """
    m = marker
    queue = f"{channel}/{destination}"
    held: set[str] = set()
    for key in sorted({r.lane_key for r in rows}):
        got = conn.exec_driver_sql(
            "INSERT INTO lane_leases (destination, lane_key, node, expires_at) "
            f"VALUES ({m}, {m}, {m}, {m}) ON CONFLICT (destination, lane_key) DO UPDATE "
            "SET node = excluded.node, expires_at = excluded.expires_at "
            f"WHERE lane_leases.node = excluded.node OR lane_leases.expires_at < {m} "
            "RETURNING lane_key",
            (queue, key, node, now + lease_us, now)).first()
        if got is not None:
            held.add(key)
    mine = [r for r in rows if r.lane_key in held]
    if not mine:
        return []
    locked = {row[0] for row in conn.exec_driver_sql(
        f"SELECT id FROM deliveries WHERE id IN ({', '.join([m] * len(mine))}) "
        "FOR UPDATE SKIP LOCKED", tuple(r.id for r in mine))}
    claimed = []
    for r in mine:
        if r.id not in locked:
            break
        claimed.append(r)
    return claimed


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

    The queue's cursor moves to the last row it is given, so a row left out comes back
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
