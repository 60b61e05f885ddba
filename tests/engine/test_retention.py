"""Pruning on a real SQLite file and a real PostgreSQL: only old contents of the right
channels and states go, metadata, deliveries and the audit chain stay (verify passes), a
dry run changes nothing, small batches give the same result, and SQLite gives the space
back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from engine.retention.prune import DAY_US, Policy, Step, Tally, prune_step, reclaim_space
from engine.store.deliveries import NewDelivery, Routing
from engine.store.schema import contents, deliveries, messages
from engine.store.status import ContentKind, Status
from engine.store.store import IncomingMessage, Store, open_store

NOW = 1_800_000_000_000_000


def arriving(control_id: str, channel: str, age_days: float, ack: str = "AA",
             size: int = 100) -> IncomingMessage:
    raw = (f"MSH|^~\\&|MON|ICU|||20261125||ORU^R01|{control_id}|P|2.6\r".encode()
           + b"OBX|" + b"x" * size + b"\r")
    return IncomingMessage(channel=channel, received_at=NOW - int(age_days * DAY_US),
                           peer="127.0.0.1:1", raw=raw, ack_code=ack, control_id=control_id,
                           message_type="ORU^R01", sending_application="MON",
                           sending_facility="ICU", patient_id="MRN1")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def fill(store: Store) -> dict[str, int]:
    """Messages of every age, channel and state the policy must tell apart."""
    batch = [
        arriving("a-old-filtered", "a", 5),
        arriving("a-old-queued", "a", 5),
        arriving("a-old-deadletter", "a", 5),
        arriving("a-old-rejected", "a", 5, ack="AR"),
        arriving("a-young", "a", 0.5),
        arriving("b-old", "b", 3),
        arriving("b-young", "b", 1.5),
        arriving("c-old", "c", 400),
    ]
    stored = store.commit_batch(batch)
    ids = {m.control_id: s.id for m, s in zip(batch, stored, strict=True)}
    filtered = ("a-old-filtered", "a-young", "b-old", "b-young", "c-old")
    store.commit_batch([], routings=[
        *(Routing(ids[c], c[0], Status.FILTERED, reason="test") for c in filtered),
        Routing(ids["a-old-queued"], "a", Status.QUEUED,
                deliveries=[NewDelivery("ehr", b"OUT queued")]),
        Routing(ids["a-old-deadletter"], "a", Status.ERROR, error="transformer failed"),
    ])
    return ids


POLICY = Policy(default_days=2, channel_days={"a": 1, "c": None})
"""a keeps 1 day, b follows the default (2 days), c too; d is not configured."""


def contents_of(store: Store) -> dict[int, int]:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(contents.c.message_id, func.count())
                                 .group_by(contents.c.message_id)).all())


def total(steps: list[Step]) -> Tally:
    out = Tally()
    for step in steps:
        out.merge(step.tally)
    return out


def run(store: Store, policy: Policy, *, batch: int = 500, dry_run: bool = False) -> list[Step]:
    steps, after = [], 0
    while True:
        step = prune_step(store, policy, NOW, after, batch=batch, dry_run=dry_run)
        steps.append(step)
        after = step.after_id
        if step.done:
            return steps


def test_prunes_only_old_finished_contents_of_each_channel(store: Store) -> None:
    """Old FILTERED and rejected go; young, queued, dead letters and kept channels stay."""
    ids = fill(store)
    with store.engine.connect() as conn:
        before_messages = conn.execute(select(func.count()).select_from(messages)).scalar()
        before_deliveries = conn.execute(select(func.count()).select_from(deliveries)).scalar()
    tally = total(run(store, POLICY))
    gone = {"a-old-filtered", "a-old-rejected", "b-old", "c-old"}
    left = contents_of(store)
    assert {c for c, i in ids.items() if i not in left} == gone
    assert left[ids["a-old-queued"]] == 2  # raw and the payload its queue still needs
    assert {name: (c["messages"], c["contents"]) for name, c in tally.channels.items()} == {
        "a": (2, 2), "b": (1, 1), "c": (1, 1)}
    assert tally.channels["b"]["bytes"] == len(arriving("b-old", "b", 3).raw)
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(messages)).scalar() == (
            before_messages)
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar() == (
            before_deliveries)
    assert store.list_messages(control_id="b-old")[0]["status"] == "FILTERED"
    assert store.content(ids["b-old"], ContentKind.RAW) is None
    checked, broken = store.verify_audit()
    assert broken is None and checked > 0


def test_unconfigured_channels_and_no_default_keep_everything(store: Store) -> None:
    """Without any retention set nothing is removed; with only channel a's, only a's."""
    ids = fill(store)
    before = contents_of(store)
    [step] = run(store, Policy())
    assert step.done and step.tally.messages == 0 and step.after_id == 0
    assert contents_of(store) == before
    run(store, Policy(channel_days={"a": 1}))
    assert set(before) - set(contents_of(store)) == {ids["a-old-filtered"],
                                                     ids["a-old-rejected"]}


def test_dry_run_counts_the_same_and_changes_nothing(store: Store) -> None:
    """The dry run's counts are exactly what the real run then removes."""
    fill(store)
    before = contents_of(store)
    dry = run(store, POLICY, dry_run=True)
    assert contents_of(store) == before
    real = run(store, POLICY)
    assert total(dry).channels == total(real).channels and total(real).messages == 4


def test_small_batches_reach_the_same_result(store: Store) -> None:
    """Batches of two messages walk everything and stop once all are young."""
    fill(store)
    steps = run(store, POLICY, batch=2)
    assert len(steps) >= 3
    assert sum(s.tally.messages for s in steps) == 4


def test_sqlite_store_gives_freed_pages_back(tmp_path: Path) -> None:
    """A new SQLite store uses incremental auto-vacuum; after pruning the file shrinks."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        stored = store.commit_batch([arriving(f"big-{i}", "a", 5, size=200_000)
                                     for i in range(20)])
        store.commit_batch([], routings=[Routing(s.id, "a", Status.FILTERED) for s in stored])
        with store.engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
            page_size = raw.execute("PRAGMA page_size").fetchone()[0]
            pages_before = raw.execute("PRAGMA page_count").fetchone()[0]
        assert total(run(store, Policy(default_days=1), batch=5)).messages == 20
        released = reclaim_space(store, pages=100_000)
        with store.engine.connect() as conn:
            pages_after = conn.connection.dbapi_connection.execute(
                "PRAGMA page_count").fetchone()[0]
        freed = 2_000_000 // page_size  # of the 4 MB pruned, at least half given back
        assert released > freed and pages_after < pages_before - freed
    finally:
        store.close()
