"""A throwaway PostgreSQL server for the tests, and the store URLs the fixtures hand out.

The store has to behave the same on SQLite and PostgreSQL, so the tests run against a real
server: `initdb` in a temporary directory, listening on 127.0.0.1 on a free port (its unix
socket stays in that directory), trust authentication, fsync off. PostgreSQL refuses to
run as root, so as root the server runs as an unprivileged user (`postgres`, or
INTERLINK_TEST_PG_USER); `tools/ensure-postgres` installs the binaries and that user.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.store.store import sqlite_url
from tests.support import free_port

NO_POSTGRES_ENV = "INTERLINK_TEST_NO_POSTGRES"
USER_ENV = "INTERLINK_TEST_PG_USER"
SUPERUSER = "postgres"
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "'32MB'",
    "max_connections": "200",
    "log_min_messages": "warning",
}

_WATCHDOG = r'''
import os, shutil, subprocess, sys
base, pg_ctl, uid, gid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.stdin.buffer.read()
data = os.path.join(base, "data")
if os.path.exists(os.path.join(data, "postmaster.pid")):
    kwargs = {} if uid < 0 else {"user": uid, "group": gid, "extra_groups": []}
    subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], cwd=base,
                   capture_output=True, check=False, **kwargs)
shutil.rmtree(base, ignore_errors=True)
'''
"""Waits for the end of the test run, however it ends (even SIGKILL closes the pipe), and
then stops a server that is still running and removes its directory."""


class PostgresUnavailable(RuntimeError):
    """The test server cannot be started on this machine (the message says why)."""


def postgres_disabled() -> bool:
    """True when the run was asked to leave PostgreSQL out (INTERLINK_TEST_NO_POSTGRES=1)."""
    return os.environ.get(NO_POSTGRES_ENV) == "1"


def find_bin_dir() -> Path:
    """The directory holding initdb/pg_ctl: PATH first, then Debian's newest version."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", Path(path).parent.parent.name))

    if not candidates:
        raise PostgresUnavailable(
            "no initdb in PATH or /usr/lib/postgresql/*/bin: run tools/ensure-postgres "
            f"(or set {NO_POSTGRES_ENV}=1 to test on SQLite only)")
    return Path(max(candidates, key=version)).parent


@dataclass
class _RunAs:
    """Who runs the server's commands: ourselves, or an unprivileged user when we are root."""

    user: str | None = None
    uid: int = -1
    gid: int = -1

    @classmethod
    def for_this_process(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls()
        name = os.environ.get(USER_ENV, "postgres")
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root and there is no user {name!r} to run PostgreSQL as: "
                "run tools/ensure-postgres") from None
        return cls(name, entry.pw_uid, entry.pw_gid)

    def run(self, args: list[str], cwd: Path, timeout: float = 120.0) -> None:
        """Run a server command; raise PostgresUnavailable with its output if it fails."""
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.uid, "group": self.gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False, **kwargs)
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"{Path(args[0]).name} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def own(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.uid, self.gid)


@dataclass
class PostgresServer:
    """One running throwaway server; `create_database` hands out fresh databases."""

    bin_dir: Path
    base: Path
    port: int
    run_as: _RunAs
    _admin: psycopg.Connection[Any] | None = None
    _watchdog: subprocess.Popen[bytes] | None = None
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _stopped: bool = False

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    @classmethod
    def start(cls, attempts: int = 3) -> PostgresServer:
        """initdb and start a server; a port taken meanwhile by someone else is retried."""
        bin_dir = find_bin_dir()
        run_as = _RunAs.for_this_process()
        base = Path(tempfile.mkdtemp(prefix="interlink-pg-"))
        server = cls(bin_dir, base, 0, run_as)
        try:
            server._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(base), str(bin_dir / "pg_ctl"),
                 str(run_as.uid), str(run_as.gid)],
                stdin=subprocess.PIPE, start_new_session=True)
            run_as.own(base)
            run_as.run([str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", SUPERUSER,
                        "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"], base)
            for attempt in range(attempts):
                server.port = free_port()
                server._configure()
                try:
                    server._pg_ctl("start", "-w", "-t", "60", "-l", str(server.log_file))
                    break
                except PostgresUnavailable as error:
                    log = server.log_file.read_text(errors="replace") \
                        if server.log_file.exists() else ""
                    if "could not bind" not in log or attempt == attempts - 1:
                        raise PostgresUnavailable(f"{error}\nserver log:\n{log}") from None
            server._admin = psycopg.connect(server.dsn("postgres"), autocommit=True)
        except BaseException:
            server.stop()
            raise
        atexit.register(server.stop)
        return server

    def _configure(self) -> None:
        settings = {**SERVER_SETTINGS, "port": str(self.port),
                    "unix_socket_directories": f"'{self.base}'"}
        with (self.data_dir / "postgresql.auto.conf").open("w") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _pg_ctl(self, *args: str) -> None:
        self.run_as.run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args],
                        self.base)

    def dsn(self, database: str) -> str:
        """A libpq connection string for one database of this server."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of one database of this server (psycopg 3 driver)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database (copied from template0, so cheap); returns its name."""
        assert self._admin is not None, "the server is not running"
        name = f"t_{next(self._names)}"
        self._admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return name

    def drop_database(self, name: str) -> None:
        """Drop a test's database, ending connections a failed test may have left open."""
        assert self._admin is not None, "the server is not running"
        self._admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._admin is not None:
            self._admin.close()
        try:
            if (self.data_dir / "postmaster.pid").exists():
                try:
                    self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
                except PostgresUnavailable:
                    self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "60")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            if self._watchdog is not None:
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.close()
                self._watchdog.wait(timeout=60)


def store_url_for(backend: str, request: pytest.FixtureRequest, directory: Path) -> str:
    """A fresh store URL on one backend, for test classes that cannot be parametrized."""
    if backend == "sqlite":
        return sqlite_url(directory)
    if backend == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    raise ValueError(f"unknown store backend {backend!r}")
