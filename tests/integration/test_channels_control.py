"""Channels change in a running engine: list, pause, resume, reload on SIGHUP, undeploy."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from tests.support import (
    CORPUS,
    free_port,
    msa,
    refused,
    send_and_receive,
    start_engine,
    wait_until,
)

pytestmark = pytest.mark.integration

SAMPLE = (CORPUS / "general" / "ipf-oru-r01-v25-glucose-lab.hl7").read_bytes()


def channel_file(directory: Path, port: int, out: Path, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "lab.yaml"
    path.write_text(f"""\
name: lab
source: {{type: mllp, port: {port}}}
filter: MSH-9.1 == ORU
destinations:
  - name: archive
    to: {{type: file, directory: {out}, filename: "{{message_id}}.hl7"}}
{extra}""")
    return path


def with_control_id(control_id: str) -> bytes:
    """The sample with its own MSH-10, so it is not taken for a duplicate."""
    first, rest = SAMPLE.split(b"\r", 1)
    fields = first.split(b"|")
    fields[9] = control_id.encode()
    return b"|".join(fields) + b"\r" + rest


def send(port: int, payload: bytes = SAMPLE) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return send_and_receive(sock, payload)


def test_channels_are_managed_without_a_restart(tmp_path: Path) -> None:
    """Pause closes the source, resume reopens it, SIGHUP deploys a changed file."""
    source_port = free_port()
    out, archive2 = tmp_path / "out", tmp_path / "out2"
    out.mkdir()
    archive2.mkdir()
    channels = tmp_path / "channels"
    path = channel_file(channels, source_port, out)
    engine = start_engine(tmp_path / "data", channels=channels)
    try:
        wait_until(lambda: not refused(source_port))
        assert msa(send(source_port))[1] in (b"AA", b"CA")
        wait_until(lambda: list(out.iterdir()))

        listing = engine.run_cli("channels", "list", "--json")
        assert listing.returncode == 0, listing.stderr
        (lab,) = json.loads(listing.stdout)["channels"]
        assert lab["name"] == "lab" and lab["state"] == "deployed"
        assert [d["name"] for d in lab["destinations"]] == ["archive"]

        assert engine.run_cli("channels", "pause", "lab").returncode == 0
        assert refused(source_port)
        assert engine.run_cli("channels", "resume", "lab").returncode == 0
        wait_until(lambda: not refused(source_port))

        channel_file(channels, source_port, out, extra=f"""\
  - name: second
    to: {{type: file, directory: {archive2}, filename: "{{message_id}}.hl7"}}
""")
        engine.proc.send_signal(signal.SIGHUP)

        def redeployed() -> bool:
            answer = json.loads(engine.run_cli("channels", "list", "--json").stdout)
            return [d["name"] for d in answer["channels"][0]["destinations"]] == [
                "archive", "second"]

        wait_until(redeployed)
        wait_until(lambda: not refused(source_port))
        assert msa(send(source_port, with_control_id("SECOND-1")))[1] in (b"AA", b"CA")
        wait_until(lambda: list(archive2.iterdir()))

        assert engine.run_cli("channels", "undeploy", "lab").returncode == 0
        assert refused(source_port)
        assert json.loads(engine.run_cli("channels", "list", "--json").stdout)[
            "channels"] == []
        missing = engine.run_cli("channels", "pause", "lab")
        assert missing.returncode == 1 and "not deployed" in missing.stdout
        assert engine.run_cli("channels", "deploy", "lab").returncode == 0
        wait_until(lambda: not refused(source_port))

        path.write_text(path.read_text().replace("max_attempts", "max_attemps") +
                        "    retry: {max_attemps: 3}\n")
        reload = engine.run_cli("channels", "reload")
        assert reload.returncode == 0
        assert "unknown key 'max_attemps'" in reload.stdout
        listing = json.loads(engine.run_cli("channels", "list", "--json").stdout)
        assert [c["name"] for c in listing["channels"]] == ["lab"]
        assert not refused(source_port)
    finally:
        assert engine.stop() == 0
    assert path.exists()


def test_reprocess_requeues_a_dead_lettered_message(tmp_path: Path) -> None:
    """A delivery that failed for good is ERROR; reprocess delivers it once fixed."""
    source_port = free_port()
    out = tmp_path / "blocked"
    out.write_text("a file where the destination directory should be\n")
    channels = tmp_path / "channels"
    channel_file(channels, source_port, out, extra="""\
    retry: {initial_seconds: 0.1, max_seconds: 0.1, jitter: 0, max_attempts: 2}
    on_exhausted: skip
""")
    engine = start_engine(tmp_path / "data", channels=channels)
    try:
        wait_until(lambda: not refused(source_port))
        assert msa(send(source_port))[1] in (b"AA", b"CA")

        def status() -> str:
            rows = engine.run_cli("messages", "list", "--format", "jsonl").stdout
            return json.loads(rows.splitlines()[0])["status"]

        wait_until(lambda: status() == "ERROR")
        out.unlink()
        out.mkdir()
        again = engine.run_cli("messages", "reprocess", "1")
        assert again.returncode == 0, again.stdout + again.stderr
        wait_until(lambda: status() == "SENT")
        assert len(list(out.iterdir())) == 1
    finally:
        assert engine.stop() == 0


def test_an_edited_hook_module_is_picked_up_by_a_reload(tmp_path: Path) -> None:
    """`channels reload` after editing only a hook module redeploys the channel, and the
    pipeline worker transforms the next message with the new code."""
    source_port = free_port()
    out, site = tmp_path / "out", tmp_path / "site"
    out.mkdir()
    site.mkdir()
    hook = site / "ward_stamp.py"
    hook.write_text("def stamp(message):\n    message.set('PV1-3.1', 'WARD-ONE')\n")
    channels = tmp_path / "channels"
    channel_file(channels, source_port, out, extra="transformer:\n"
                                                   "  - python: ward_stamp:stamp\n")
    engine = start_engine(tmp_path / "data", channels=channels,
                          extra_env={"PYTHONPATH": str(site)})
    try:
        wait_until(lambda: not refused(source_port))
        assert msa(send(source_port, with_control_id("HOOK-1")))[1] in (b"AA", b"CA")
        wait_until(lambda: len(list(out.iterdir())) == 1)
        hook.write_text("def stamp(message):\n    message.set('PV1-3.1', 'WARD-TWO')\n")
        status, answer = engine.api("POST", "channels/reload")
        assert (status, answer["changes"]["redeployed"]) == (200, ["lab"]), answer
        wait_until(lambda: not refused(source_port))
        assert msa(send(source_port, with_control_id("HOOK-2")))[1] in (b"AA", b"CA")
        wait_until(lambda: len(list(out.iterdir())) == 2)
        stamps = sorted(b"WARD-TWO" in f.read_bytes() for f in out.iterdir())
        assert stamps == [False, True]
        assert engine.api("POST", "channels/reload")[1]["changes"]["redeployed"] == []
    finally:
        assert engine.stop() == 0


def test_a_hook_that_ends_its_process_takes_only_its_message_down(tmp_path: Path) -> None:
    """A hook that ends the interpreter ends a pipeline worker, never the engine: its
    message is ERROR (reprocessable), the worker is replaced, and routing goes on."""
    source_port = free_port()
    out = tmp_path / "out"
    out.mkdir()
    channels = tmp_path / "channels"
    channel_file(channels, source_port, out, extra=(
        "transformer:\n  - python: tests.channels.hook_samples:ends_the_process\n"))
    engine = start_engine(tmp_path / "data", channels=channels)
    try:
        wait_until(lambda: not refused(source_port))
        assert msa(send(source_port, with_control_id("END-THE-PROCESS")))[1] in (b"AA", b"CA")

        def rows() -> dict[str, dict[str, object]]:
            listing = engine.run_cli("messages", "list", "--format", "jsonl").stdout
            return {r["control_id"]: r for r in map(json.loads, listing.splitlines())}

        wait_until(lambda: rows().get("END-THE-PROCESS", {}).get("status") == "ERROR")
        assert engine.proc.poll() is None
        assert msa(send(source_port, with_control_id("AFTER-1")))[1] in (b"AA", b"CA")
        wait_until(lambda: rows().get("AFTER-1", {}).get("status") == "SENT")
        [delivered] = list(out.iterdir())
        assert b"HOOKED" in delivered.read_bytes()
        shown = engine.api("GET", f"messages/{rows()['END-THE-PROCESS']['id']}")[1]
        assert "pipeline worker ended (exit 3)" in json.dumps(shown)
    finally:
        assert engine.stop() == 0
