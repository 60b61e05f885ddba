"""`interlink audit verify` (the real command) catches rows edited, deleted or swapped
directly in the database, on SQLite and PostgreSQL, and names the first bad event."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.audit import AuditEvent, canonical_form, seal
from engine.store.schema import audit_events
from engine.store.store import IncomingMessage, Store, now_us, open_store
from tests.support import INTERLINK, REPO, engine_env, free_port

COLUMNS = ("at", "actor", "action", "message_id", "channel", "detail", "prev_hash", "hash")


def incoming(control_id: str) -> IncomingMessage:
    return IncomingMessage(
        channel="inbound", received_at=now_us(), peer="127.0.0.1:40000",
        raw=f"MSH|^~\\&|MON|ICU|||20261125||ORU^R01|{control_id}|P|2.6\r".encode(),
        ack_code="AA", control_id=control_id, message_type="ORU^R01", version="2.6",
        sending_application="MON", sending_facility="ICU", patient_id="MRN1")


def filled_store(url: str) -> Store:
    """Eight events: four received messages, two human actions, two more messages."""
    store = open_store(url)
    store.commit_batch([incoming(f"V{i}") for i in range(4)])
    store.append_audit([AuditEvent(now_us(), "ada", "auth.login", detail={"peer": "p"}),
                        AuditEvent(now_us(), "ada", "message.view", 2, "inbound",
                                   {"peer": "p"})])
    store.commit_batch([incoming("V4"), incoming("V5")])
    return store


def verify(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = engine_env(tmp_path / "data", free_port())
    env["INTERLINK_STORE_URL"] = url
    return subprocess.run([*INTERLINK, "audit", "verify", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def edit(store: Store) -> None:
    with store.engine.begin() as db:
        db.exec_driver_sql("UPDATE audit_events SET actor = 'mallory' WHERE id = 5")


def edit_and_reseal(store: Store) -> None:
    """Change event 5 and give it a correct hash of its own: event 6 no longer links."""
    with store.engine.begin() as db:
        row = db.execute(select(audit_events).where(audit_events.c.id == 5)).one()
        forged = seal(row.prev_hash, canonical_form(row.at, "mallory", row.action,
                                                    row.message_id, row.channel, row.detail))
        db.execute(audit_events.update().where(audit_events.c.id == 5)
                   .values(actor="mallory", hash=forged))


def delete(store: Store) -> None:
    with store.engine.begin() as db:
        db.exec_driver_sql("DELETE FROM audit_events WHERE id = 4")


def swap(store: Store) -> None:
    """Exchange everything but the ids of events 3 and 6."""
    with store.engine.begin() as db:
        rows = {r.id: r for r in db.execute(
            select(audit_events).where(audit_events.c.id.in_((3, 6))))}
        for target, source in ((3, 6), (6, 3)):
            db.execute(audit_events.update().where(audit_events.c.id == target)
                       .values({c: getattr(rows[source], c) for c in COLUMNS}))


CASES: dict[str, tuple[Callable[[Store], None], int, int, str, str]] = {
    # tamper, first bad event named, intact events before it, kind, reason
    "edit": (edit, 5, 4, "edited", "does not match its hash"),
    "edit-and-reseal": (edit_and_reseal, 5, 4, "edited", "hash recomputed"),
    "delete": (delete, 5, 3, "removed", "event 4 before it was removed"),
    "swap": (swap, 3, 2, "reordered", "follows event"),
}


def test_an_untouched_chain_verifies(tmp_path: Path, store_url: str) -> None:
    """Exit 0 and the number of events checked."""
    filled_store(store_url).close()
    result = verify(tmp_path, store_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "intact: 8 events checked" in result.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampering_is_caught_and_the_first_bad_event_named(
        tmp_path: Path, store_url: str, case: str) -> None:
    """Exit 1, naming the first bad event's id, time and action, and what happened to it."""
    tamper, bad_id, intact, kind, why = CASES[case]
    store = filled_store(store_url)
    with store.engine.connect() as db:
        action = db.execute(select(audit_events.c.action)
                            .where(audit_events.c.id == (6 if case == "swap" else bad_id))
                            ).scalar_one()
    tamper(store)
    store.close()
    result = verify(tmp_path, store_url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"first bad event: id {bad_id} at 20" in result.stdout
    assert f"action {action}" in result.stdout
    assert f"{kind}: " in result.stdout and why in result.stdout
    assert f"after {intact} intact events" in result.stdout


def test_an_anchor_catches_removing_the_newest_events_and_rewriting(
        tmp_path: Path, store_url: str) -> None:
    """The head an intact run prints, given back later, fails once the tail is cut or the
    whole chain is rewritten — what the chain alone cannot show."""
    store = filled_store(store_url)
    store.close()
    first = verify(tmp_path, store_url)
    head = first.stdout.split("head: ", 1)[1].split()[0]
    assert head.startswith("8:")
    assert verify(tmp_path, store_url, "--anchor", head).returncode == 0

    store = open_store(store_url)
    with store.engine.begin() as db:  # the newest event changed and resealed
        row = db.execute(select(audit_events).where(audit_events.c.id == 8)).one()
        forged = seal(row.prev_hash, canonical_form(row.at, "mallory", row.action,
                                                    row.message_id, row.channel, row.detail))
        db.execute(audit_events.update().where(audit_events.c.id == 8)
                   .values(actor="mallory", hash=forged))
    store.close()
    assert verify(tmp_path, store_url).returncode == 0  # the chain alone still looks whole
    rewritten = verify(tmp_path, store_url, "--anchor", head)
    assert rewritten.returncode == 1 and "stored with another hash" in rewritten.stdout

    store = open_store(store_url)
    with store.engine.begin() as db:
        db.exec_driver_sql("DELETE FROM audit_events WHERE id >= 7")
    store.close()
    assert verify(tmp_path, store_url).returncode == 0
    cut = verify(tmp_path, store_url, "--anchor", head)
    assert cut.returncode == 1 and "anchor event 8 is gone" in cut.stdout
