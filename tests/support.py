"""What the integration tests share: framing, free ports, engine processes, the corpus."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.store.store import Store, open_store, sqlite_url

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
INTERLINK = [sys.executable, "-m", "engine.cli"]
SB, EB, CR = b"\x0b", b"\x1c", b"\r"


def frame(payload: bytes) -> bytes:
    """MLLP-frame a payload (written out here, independent of the codec under test)."""
    return SB + payload + EB + CR


def frames_from(conn: socket.socket, stopped: Callable[[], bool] = lambda: False
                ) -> Iterator[bytes]:
    """The payloads of the MLLP frames arriving on a connection, until it closes, fails or
    `stopped()` says so.

    The socket peers that stand in for an EHR read frames the same way and differ only
    in how they answer, which the caller decides for each payload.
    """
    buf = b""
    while not stopped():
        try:
            data = conn.recv(65536)
        except OSError:
            return
        if not data:
            return
        buf += data
        while EB + CR in buf:
            end = buf.index(EB + CR)
            payload = buf[buf.find(SB) + 1:end]
            buf = buf[end + 2:]
            yield payload


def corpus_files() -> list[Path]:
    """Every HL7 file of the public corpus, sorted."""
    return sorted(CORPUS.rglob("*.hl7"))


def first_line_fields(raw: bytes) -> list[bytes]:
    """MSH fields split the naive way, as a test oracle independent of the profiles code."""
    first = re.split(rb"\r\n|\r|\n", raw.lstrip(b"\xef\xbb\xbf"), maxsplit=1)[0]
    sep = first[3:4] if first.startswith(b"MSH") else b"|"
    return first.split(sep) if sep else [first]


def msa(answer: bytes) -> list[bytes]:
    """The MSA fields of an answer (empty list when there is no MSA)."""
    start = answer.find(b"MSH")
    sep = answer[start + 3:start + 4] if start >= 0 else b"|"
    for line in re.split(rb"\r\n|\r|\n", answer):
        if line.startswith(b"MSA"):
            return line.split(sep or b"|")
    return []


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None,
                  timeout: float = 30.0) -> None:
    """Block until something accepts connections on the port (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"engine exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def refused(port: int) -> bool:
    """True when nothing accepts connections on the port (a paused or stopped source)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def wait_until(predicate: Callable[[], Any], what: str = "the condition",
               timeout: float = 60.0) -> Any:
    """Poll until `predicate()` is truthy and return its value; fail naming `what`.

    Engine processes settle in their own time, so tests wait for a state with a generous
    deadline instead of sleeping a fixed time.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what} (last: {value!r})")
        time.sleep(0.1)


def send_and_receive(sock: socket.socket, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send one framed message on a blocking socket and read one framed answer."""
    sock.settimeout(timeout)
    sock.sendall(frame(payload))
    buf = b""
    while EB + CR not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before an answer")
        buf += chunk
    start = buf.find(SB)
    return buf[start + 1: buf.find(EB + CR)]


@dataclass
class EngineProcess:
    """An `interlink run` subprocess on its own data directory and port."""

    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    config: Path | None = None
    admin_port: int = 0
    channels: Path | None = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the engine and wait for it to exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def local_token(self) -> str:
        """The admin token the running engine wrote for commands on this machine."""
        return (self.data_dir / "admin.token").read_text().strip()

    def api(self, method: str, path: str, body: Any = None, token: str | None = None,
            headers: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, Any]:
        """Call `/api/v1/<path>` with a Bearer token (the local admin token unless given).

        Returns the status and the JSON answer (None for an empty body), also for errors.
        Pass `token=""` to call without credentials.
        """
        bearer = self.local_token() if token is None else token
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}/api/v1/{path}",
            data=None if body is None else json.dumps(body).encode(), method=method,
            headers={"content-type": "application/json",
                     **({"authorization": f"Bearer {bearer}"} if bearer else {}),
                     **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            text = error.read()
            try:
                return error.code, json.loads(text or b"null")
            except ValueError:
                return error.code, text.decode("utf-8", "replace")

    def run_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run another `interlink` command against this engine's store."""
        env = engine_env(self.data_dir, self.port, self.config, self.admin_port, self.channels)
        return subprocess.run([*INTERLINK, *args], env=env,
                              cwd=REPO, capture_output=True, text=True, timeout=60)


def engine_env(data_dir: Path, port: int, config: Path | None = None, admin_port: int = 0,
               channels: Path | None = None) -> dict[str, str]:
    """Environment that points an engine (or a CLI command) at a test's own data.

    Unless a test names a channels directory, the engine gets an empty one of its own, so
    the example channels in conf/channels never bind ports under a test.
    """
    env = dict(os.environ)
    if channels is None:
        channels = data_dir / "no-channels"
        channels.mkdir(parents=True, exist_ok=True)
    env.update(INTERLINK_DATA_DIR=str(data_dir), INTERLINK_MLLP_PORT=str(port),
               INTERLINK_ADMIN_PORT=str(admin_port or free_port()),
               INTERLINK_CHANNELS_DIR=str(channels.resolve()), PYTHONUNBUFFERED="1")
    if config is not None:
        env["INTERLINK_CONFIG"] = str(config)
    return env


def start_engine(data_dir: Path, port: int | None = None, config: Path | None = None,
                 channels: Path | None = None, admin_port: int | None = None,
                 extra_env: dict[str, str] | None = None) -> EngineProcess:
    """Start `interlink run` (shipped config unless given) and wait until it listens."""
    port = port or free_port()
    admin_port = admin_port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"engine-{port}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        env = engine_env(data_dir, port, config, admin_port, channels)
        env.update(extra_env or {})
        proc = subprocess.Popen([*INTERLINK, "run"], env=env,
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    engine = EngineProcess(data_dir, port, proc, log, config, admin_port, channels)
    try:
        wait_for_port(port, proc)
        wait_for_port(admin_port, proc)
    except Exception:
        engine.stop(signal.SIGKILL)
        raise RuntimeError(log.read_text()) from None
    return engine


def write_mllp_channel(directory: Path, name: str, port: int,
                       destinations: list[dict[str, Any]], **channel: Any) -> Path:
    """The channel file `<name>.yaml` with an MLLP source on `port` and these destinations.

    Written as JSON (which is YAML), so tests build channels as data and need no YAML
    writer; `channel` adds keys such as a filter or `pcd` settings.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = {"name": name, "source": {"type": "mllp", "port": port},
              "destinations": destinations, **channel}
    path = directory / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


def start_with_channels(data_dir: Path, channels: Path, source_ports: list[int],
                        extra_env: dict[str, str] | None = None) -> EngineProcess:
    """`interlink run` with a channels directory; returns once every source listens.

    The admin port answering does not mean the channels are deployed yet, so a test that
    sends at once would race the engine.
    """
    engine = start_engine(data_dir, channels=channels, extra_env=extra_env)
    try:
        for port in source_ports:
            wait_for_port(port, engine.proc)
    except Exception:
        engine.stop(signal.SIGKILL)
        raise RuntimeError(engine.log.read_text()) from None
    return engine


@contextmanager
def running(engine: EngineProcess) -> Iterator[EngineProcess]:
    """Stop the engine at the end; a clean stop is part of what the test checks.

    A failing test kills the engine and prints the end of its log, the only place a
    subprocess's side of the failure shows.
    """
    try:
        yield engine
    except BaseException:
        engine.stop(signal.SIGKILL)
        print(engine.log.read_text()[-20000:])
        raise
    code = engine.stop()
    assert code == 0, engine.log.read_text()[-20000:]


@contextmanager
def store_of(engine: EngineProcess, url: str | None = None) -> Iterator[Store]:
    """The engine's store (its SQLite file unless `url` names another), opened from the
    test to read outcomes the way the engine recorded them."""
    store = open_store(url or sqlite_url(engine.data_dir))
    try:
        yield store
    finally:
        store.close()


def iter_lines(text: str) -> Iterator[str]:
    """Non-empty lines of a command's output."""
    return (line for line in text.splitlines() if line.strip())
