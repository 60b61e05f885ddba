"""`interlink users` with and without a running engine; each change audited as cli:<user>."""

from __future__ import annotations

import getpass
import json
import subprocess
from pathlib import Path

from sqlalchemy import select

from engine.store.schema import audit_events
from engine.store.store import open_store, sqlite_url
from tests.support import INTERLINK, REPO, engine_env, free_port, start_engine

PASSWORD = "a-long-enough-pw"


def interlink(data_dir: Path, *args: str, stdin: str = "", admin_port: int = 0
              ) -> subprocess.CompletedProcess[str]:
    env = engine_env(data_dir, free_port(), admin_port=admin_port or free_port())
    return subprocess.run([*INTERLINK, *args], env=env, cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=120)


def audit(data_dir: Path) -> list[tuple[str, str, dict[str, object]]]:
    store = open_store(sqlite_url(data_dir))
    try:
        with store.engine.connect() as conn:
            return [(r.actor, r.action, json.loads(r.detail)) for r in conn.execute(
                select(audit_events).order_by(audit_events.c.id))]
    finally:
        store.close()


def test_users_on_the_store_when_no_engine_runs(tmp_path: Path) -> None:
    """add, list, role, token, tokens, remove work on the store and go on the chain."""
    data = tmp_path / "data"
    added = interlink(data, "users", "add", "ada", "--role", "operator", "--password-stdin",
                      stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    listed = interlink(data, "users", "list", "--json")
    assert json.loads(listed.stdout) == [
        {"name": "ada", "role": "operator", "created_at": json.loads(listed.stdout)[0][
            "created_at"]}]
    assert interlink(data, "users", "role", "ada", "admin").returncode == 0
    made = interlink(data, "users", "token", "ada", "--name", "ci", "--role", "viewer")
    assert made.returncode == 0 and made.stdout.strip().startswith("il_")
    assert "ci" in interlink(data, "users", "tokens", "ada").stdout
    again = interlink(data, "users", "add", "ada", "--role", "viewer", "--password-stdin",
                      stdin=PASSWORD + "\n")
    assert again.returncode == 1 and "already exists" in again.stderr
    short = interlink(data, "users", "add", "bob", "--role", "viewer", "--password-stdin",
                      stdin="short\n")
    assert short.returncode == 1 and "at least 8" in short.stderr
    assert interlink(data, "users", "remove", "ada").returncode == 0
    events = audit(data)
    actor = f"cli:{getpass.getuser()}"
    assert [(a, act) for a, act, _ in events] == [
        (actor, "user.added"), (actor, "user.role_changed"), (actor, "token.created"),
        (actor, "user.removed")]
    assert all(PASSWORD not in json.dumps(d) for _, _, d in events)
    assert interlink(data, "audit", "verify").returncode == 0


def test_users_through_a_running_engine_keep_one_chain(tmp_path: Path) -> None:
    """With the engine up, the command asks it (local token); logins work; the chain holds."""
    engine = start_engine(tmp_path / "data")
    try:
        added = interlink(engine.data_dir, "users", "add", "vera", "--role", "viewer",
                          "--password-stdin", stdin=PASSWORD + "\n",
                          admin_port=engine.admin_port)
        assert added.returncode == 0, added.stderr
        status, me = engine.api("POST", "auth/login", {"user": "vera", "password": PASSWORD},
                                token="")
        assert (status, me["role"]) == (200, "viewer")
        made = interlink(engine.data_dir, "users", "token", "vera", admin_port=engine.admin_port)
        status, me = engine.api("GET", "auth/me", token=made.stdout.strip())
        assert (status, me["user"], me["via"]) == (200, "vera", "token")
        assert engine.api("GET", "channels")[0] == 200  # the engine writes after the CLI
    finally:
        assert engine.stop() == 0
    actors = {(actor, action) for actor, action, _ in audit(engine.data_dir)}
    assert (f"cli:{getpass.getuser()}", "user.added") in actors
    assert ("vera", "auth.login") in actors
    verified = interlink(engine.data_dir, "audit", "verify")
    assert verified.returncode == 0, verified.stdout


def test_a_running_engine_that_does_not_answer_is_never_written_beside(tmp_path: Path) -> None:
    """Engine up, API unreachable for the command: users and prune refuse; a second engine
    on the same store refuses to start; the chain stays whole."""
    engine = start_engine(tmp_path / "data")
    try:
        lost = interlink(engine.data_dir, "users", "add", "eve", "--role", "viewer",
                         "--password-stdin", stdin=PASSWORD + "\n")  # wrong admin port
        assert lost.returncode == 1 and "would fork the audit chain" in lost.stderr
        second = subprocess.run([*INTERLINK, "run"], cwd=REPO, capture_output=True,
                                text=True, timeout=120,
                                env=engine_env(engine.data_dir, free_port(),
                                               admin_port=free_port()))
        assert second.returncode != 0
        assert "another engine is running" in second.stdout + second.stderr
        assert engine.api("GET", "channels")[0] == 200
    finally:
        assert engine.stop() == 0
    assert "eve" not in interlink(engine.data_dir, "users", "list").stdout
    assert interlink(engine.data_dir, "audit", "verify").returncode == 0


def test_users_password_sets_a_new_one_on_the_store_or_through_the_engine(
        tmp_path: Path) -> None:
    """`users password` on the store (no engine) and through a running engine, where the
    new password logs in at once and the old one no longer does."""
    data = tmp_path / "data"
    assert interlink(data, "users", "add", "ida", "--role", "viewer", "--password-stdin",
                     stdin=PASSWORD + "\n").returncode == 0
    offline = "set-while-stopped-1"
    done = interlink(data, "users", "password", "ida", "--password-stdin", stdin=offline + "\n")
    assert (done.returncode, done.stdout.strip()) == (0, "ida: password set"), done.stderr
    unknown = interlink(data, "users", "password", "nobody", "--password-stdin",
                        stdin=offline + "\n")
    assert unknown.returncode == 1 and "no user nobody" in unknown.stderr
    engine = start_engine(data)
    try:
        assert engine.api("POST", "auth/login", {"user": "ida", "password": offline},
                          token="")[0] == 200
        online = "set-while-running-2"
        done = interlink(data, "users", "password", "ida", "--password-stdin",
                         stdin=online + "\n", admin_port=engine.admin_port)
        assert done.returncode == 0, done.stderr
        assert engine.api("POST", "auth/login", {"user": "ida", "password": offline},
                          token="")[0] == 401
        assert engine.api("POST", "auth/login", {"user": "ida", "password": online},
                          token="")[0] == 200
    finally:
        assert engine.stop() == 0
    resets = [(actor, action) for actor, action, _ in audit(data)
              if action == "user.password_reset"]
    assert resets == [(f"cli:{getpass.getuser()}", "user.password_reset")] * 2
    assert interlink(data, "audit", "verify").returncode == 0
