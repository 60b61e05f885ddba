"""`interlink prune` against a real engine process and without one: the dry run reports
and changes nothing; the real run goes through the running engine's job (streamed
progress), or prunes the store itself when no engine runs; either way metadata and an
intact audit chain remain, with one `retention.pruned` event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from engine.retention.prune import DAY_US
from engine.store.deliveries import Routing
from engine.store.schema import audit_events, contents, messages
from engine.store.status import Status
from engine.store.store import IncomingMessage, now_us, open_store, sqlite_url
from tests.support import EngineProcess, start_engine

pytestmark = pytest.mark.integration


def prefill(data_dir: Path) -> None:
    """Three messages received days ago and one just now, all FILTERED."""
    store = open_store(sqlite_url(data_dir))
    try:
        batch = [IncomingMessage(channel="inbound", received_at=now_us() - age * DAY_US,
                                 peer="127.0.0.1:1", ack_code="AA", control_id=f"C{age}",
                                 raw=f"MSH|^~\\&|M|F|||||ORU^R01|C{age}|P|2.6\r".encode())
                 for age in (9, 8, 7, 0)]
        stored = store.commit_batch(batch)
        store.commit_batch([], routings=[Routing(s.id, "inbound", Status.FILTERED)
                                         for s in stored])
    finally:
        store.close()


def counts(data_dir: Path) -> tuple[int, int, list[str], int | None]:
    """(messages, contents, retention events, first audit break or None)."""
    store = open_store(sqlite_url(data_dir))
    try:
        with store.engine.connect() as conn:
            n_messages = conn.execute(select(func.count()).select_from(messages)).scalar()
            n_contents = conn.execute(select(func.count()).select_from(contents)).scalar()
            pruned = conn.execute(select(audit_events.c.detail).where(
                audit_events.c.action == "retention.pruned")).scalars().all()
        _, broken = store.verify_audit()
        return n_messages, n_contents, pruned, None if broken is None else broken.event_id
    finally:
        store.close()


@pytest.fixture
def engine_file(tmp_path: Path) -> Path:
    path = tmp_path / "interlink.yaml"
    path.write_text("retention:\n  content_days: 3\n  batch_size: 2\n")
    return path


def test_dry_run_then_prune_through_the_running_engine(tmp_path: Path,
                                                       engine_file: Path) -> None:
    """The dry run names three messages; the engine's job removes exactly those."""
    data = tmp_path / "data"
    prefill(data)
    engine: EngineProcess = start_engine(data, config=engine_file)
    try:
        dry = engine.run_cli("prune", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "would remove: contents of 3 messages" in dry.stdout
        assert counts(data)[:3] == (4, 4, [])
        done = engine.run_cli("prune")
        assert done.returncode == 0, done.stderr
        assert "removed by the running engine: contents of 3 messages" in done.stdout
    finally:
        assert engine.stop() == 0, engine.log.read_text()[-5000:]
    n_messages, n_contents, pruned, broken = counts(data)
    assert (n_messages, n_contents, broken) == (4, 1, None)
    [detail] = [json.loads(d) for d in pruned]
    assert detail["channels"]["inbound"]["messages"] == 3 and detail["default_days"] == 3


def test_prune_without_an_engine_prunes_the_store_itself(tmp_path: Path,
                                                         engine_file: Path) -> None:
    """No engine answering: the command prunes and audits on its own, chain intact."""
    data = tmp_path / "data"
    prefill(data)
    engine = EngineProcess(data, 0, None, tmp_path / "none.log", engine_file,  # type: ignore[arg-type]
                           admin_port=1)
    done = engine.run_cli("prune")
    assert done.returncode == 0, done.stderr
    assert "removed: contents of 3 messages" in done.stdout
    n_messages, n_contents, pruned, broken = counts(data)
    assert (n_messages, n_contents, len(pruned), broken) == (4, 1, 1, None)
