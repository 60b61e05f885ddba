"""Sessions and login lockout on a `task.Clock`: the real gate and routes over loopback HTTP,
with a real SQLite store and writer, so only time is simulated."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import treq
from sqlalchemy import select
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from engine.access import directory
from engine.access.config import AccessConfig
from engine.access.gate import AccessGate
from engine.access.passwords import hash_password
from engine.access.refusals import RefusalDigest
from engine.access.router import AccessRouter
from engine.access.sessions import LoginThrottle, SessionStore
from engine.api import auth, users
from engine.api.routing import Role
from engine.config import EngineConfig
from engine.service import EngineService
from engine.store.schema import audit_events
from engine.store.store import open_store
from engine.writer import GroupCommitWriter

reactor: Any = _reactor
PASSWORD = "a-long-enough-pw"
ACCESS = AccessConfig(session_lifetime_seconds=3600, idle_timeout_seconds=600,
                      max_failed_logins=3, max_failed_logins_per_peer=10,
                      lockout_seconds=60, max_lockout_seconds=300)


def test_sessions_end_after_idle_time_or_lifetime() -> None:
    """Use restarts the idle time; the lifetime ends a session however busy it is."""
    clock = Clock()
    sessions = SessionStore(clock, lifetime=100, idle=30)
    busy, idle = sessions.open("ada"), sessions.open("bob")
    for _ in range(3):
        clock.advance(29)
        assert sessions.get(busy.id) is busy
    assert sessions.get(idle.id) is None
    clock.advance(12)
    assert sessions.get(busy.id) is busy
    clock.advance(1)  # 100 s after login: the lifetime is over
    assert sessions.get(busy.id) is None
    assert len(sessions) == 0


def test_lockout_doubles_and_expires() -> None:
    """The limit locks a key; each further failure doubles the wait up to the maximum."""
    clock = Clock()
    throttle = LoginThrottle(clock, limit=2, lockout=10, max_lockout=25)
    throttle.failed("user:ada")
    assert throttle.retry_after("user:ada") == 0
    throttle.failed("user:ada")
    assert throttle.retry_after("user:ada", "peer:x") == 10
    clock.advance(10)
    assert throttle.retry_after("user:ada") == 0
    throttle.failed("user:ada")
    assert throttle.retry_after("user:ada") == 20
    clock.advance(20)
    throttle.failed("user:ada")
    assert throttle.retry_after("user:ada") == 25
    throttle.succeeded("user:ada")
    assert throttle.retry_after("user:ada") == 0


def test_a_lockout_is_reported_once_however_often_it_is_hit() -> None:
    """Only the first refusal of each lockout is worth an audit row; a new lockout is new."""
    clock = Clock()
    throttle = LoginThrottle(clock, limit=1, lockout=10, max_lockout=25)
    assert not throttle.first_refusal("user:ada", "peer:x")
    throttle.failed("user:ada")
    assert throttle.first_refusal("user:ada", "peer:x")
    assert not throttle.first_refusal("user:ada", "peer:x")
    clock.advance(10)
    throttle.failed("user:ada")
    assert throttle.first_refusal("user:ada")
    assert not throttle.first_refusal("user:ada")


def test_refusals_are_digested_per_key_and_interval() -> None:
    """The first refusal of a key is reported, then one per interval carrying the count;
    keys do not share a count, and a full table forgets the quiet ones first."""
    clock = Clock()
    digest = RefusalDigest(clock, interval=60, max_keys=3)
    assert [digest.refused("a") for _ in range(4)] == [1, 0, 0, 0]
    assert digest.refused("b") == 1
    clock.advance(60)
    assert (digest.refused("a"), digest.refused("a"), digest.refused("b")) == (4, 0, 1)
    clock.advance(600)
    assert digest.refused("a") == 2
    assert digest.refused("c") == 1
    clock.advance(30)
    assert digest.refused("d") == 1  # "b" was quiet for 630 s and made room; "c" was not
    assert set(digest._keys) == {"a", "c", "d"}


class GateOverHTTP(TestCase):
    """Login, idle timeout, lifetime and lockout as a browser meets them."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        data = Path(tempfile.mkdtemp(prefix="interlink-sessions-"))
        self.addCleanup(shutil.rmtree, data, True)
        config = EngineConfig(data_dir=data, access=ACCESS)
        engine = self.engine = EngineService(config, reactor)
        engine._readers.start()
        self.addCleanup(engine._readers.stop)
        store = engine.store = open_store(config.store_url())
        engine.writer = GroupCommitWriter(store, reactor)
        engine.writer.start()
        self.addCleanup(engine.writer.stop)
        self.clock = Clock()
        self.clock.advance(1_000_000)
        engine.access = AccessGate(engine, clock=self.clock)
        with store.engine.begin() as conn:
            directory.add_user(conn, "ada", Role.ADMIN, hash_password(PASSWORD), 1)
        router = AccessRouter(auth.routes(engine) + users.routes(engine),
                              engine.access.authenticate, engine.audit_action)
        root, api = resource.Resource(), resource.Resource()
        root.putChild(b"api", api)
        api.putChild(b"v1", router)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server.Site(root))
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}/api/v1/"

    @defer.inlineCallbacks
    def call(self, method: str, path: str, body: Any = None, cookie: str = "",
             csrf: str = "", authorization: str = "") -> Any:
        headers = {"content-type": "application/json"}
        if authorization:
            headers["authorization"] = authorization
        if cookie:
            headers["cookie"] = cookie
        if csrf:
            headers["x-interlink-csrf"] = csrf
        response = yield treq.request(method, self.base + path, headers=headers,
                                      data=json.dumps(body).encode() if body else None,
                                      persistent=False)
        text = yield response.content()
        return response.code, json.loads(text) if text else None, response

    @defer.inlineCallbacks
    def login(self, password: str = PASSWORD) -> Any:
        code, body, response = yield self.call("POST", "auth/login",
                                               {"user": "ada", "password": password})
        cookie = (response.headers.getRawHeaders("set-cookie") or [""])[0].split(";")[0]
        return code, body, cookie

    @defer.inlineCallbacks
    def test_idle_session_ends_and_a_busy_one_ends_at_its_lifetime(self) -> Any:
        """Requests keep a session alive until the lifetime; ten idle minutes end it."""
        code, body, cookie = yield self.login()
        self.assertEqual((code, body["role"]), (200, "admin"))
        for _ in range(5):
            self.clock.advance(599)
            code, _, _ = yield self.call("GET", "auth/me", cookie=cookie)
            self.assertEqual(code, 200)
        self.clock.advance(599)  # 3594 s since login, a request every 599 s
        code, _, _ = yield self.call("GET", "auth/me", cookie=cookie)
        self.assertEqual(code, 200)
        self.clock.advance(10)
        code, _, _ = yield self.call("GET", "auth/me", cookie=cookie)
        self.assertEqual(code, 401)
        _, _, cookie = yield self.login()
        self.clock.advance(600)
        code, _, _ = yield self.call("GET", "auth/me", cookie=cookie)
        self.assertEqual(code, 401)

    @defer.inlineCallbacks
    def test_lockout_after_failures_lifts_with_time(self) -> Any:
        """Three wrong passwords lock the user out for a minute, even with the right one."""
        for _ in range(3):
            code, body, _ = yield self.login("wrong-password")
            self.assertEqual((code, body), (401, {"error": "wrong user name or password"}))
        code, _, _ = yield self.login()
        self.assertEqual(code, 429)
        self.clock.advance(59)
        code, _, _ = yield self.login()
        self.assertEqual(code, 429)
        self.assertEqual(self.lockout_rows(), 1, "one audit row per lockout, not per try")
        self.clock.advance(1)
        code, _, _ = yield self.login()
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_refused_tokens_are_audited_once_a_minute_per_peer_and_kind(self) -> Any:
        """A script retrying a revoked token leaves one row a minute with its count; the
        token itself is never written, and a different refusal is recorded apart."""
        assert self.engine.store is not None
        with self.engine.store.engine.begin() as conn:
            record, token = directory.create_token(conn, "ada", "nightly-export",
                                                   Role.VIEWER, 1)
            directory.revoke_token(conn, record["id"], 2)
        for _ in range(3):
            code, _, _ = yield self.call("GET", "auth/me",
                                         authorization=f"Bearer {token}")
            self.assertEqual(code, 401)
            self.clock.advance(20)
        code, _, _ = yield self.call("GET", "auth/me", authorization="Bearer il_guessed")
        self.assertEqual(code, 401)
        code, _, _ = yield self.call("GET", "auth/me", authorization="Basic YWRhOnB3")
        self.assertEqual(code, 401)
        code, _, _ = yield self.call("GET", "auth/me", authorization=f"Bearer {token}")
        self.assertEqual(code, 401)  # 60 s after the first: reported with the two before
        rows = self.refusal_rows()
        self.assertEqual([(r.actor, d["reason"], d["refusals"]) for r, d in rows], [
            ("ada", "revoked token", 1), ("anonymous", "unknown token", 1),
            ("anonymous", "not a Bearer token", 1), ("ada", "revoked token", 3)])
        self.assertEqual((rows[0][1]["token"], rows[2][1]["scheme"]),
                         ("nightly-export", "Basic"))
        self.assertTrue(all(token not in r.detail and "il_guessed" not in r.detail
                            and "YWRh" not in r.detail for r, _ in rows))

    def refusal_rows(self) -> list[tuple[Any, dict[str, Any]]]:
        assert self.engine.store is not None
        with self.engine.store.engine.connect() as conn:
            return [(row, json.loads(row.detail)) for row in conn.execute(
                select(audit_events).where(audit_events.c.action == "auth.token_refused")
                .order_by(audit_events.c.id))]

    def lockout_rows(self) -> int:
        assert self.engine.store is not None
        with self.engine.store.engine.connect() as conn:
            return sum('"locked out"' in row.detail for row in conn.execute(
                select(audit_events).where(audit_events.c.action == "auth.login_failed")))

    @defer.inlineCallbacks
    def test_logout_ends_the_session_and_needs_its_csrf_token(self) -> Any:
        """Logging out is a change: without the CSRF token it is refused."""
        _, body, cookie = yield self.login()
        code, _, _ = yield self.call("POST", "auth/logout", cookie=cookie)
        self.assertEqual(code, 403)
        code, out, _ = yield self.call("POST", "auth/logout", cookie=cookie,
                                       csrf=body["csrf_token"])
        self.assertEqual((code, out), (200, {"logged_out": True}))
        code, _, _ = yield self.call("GET", "auth/me", cookie=cookie)
        self.assertEqual(code, 401)
