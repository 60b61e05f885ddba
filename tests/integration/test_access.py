"""Access control over a real engine: logins, sessions, tokens, roles, and their audit."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engine.store.schema import audit_events
from engine.store.store import open_store, sqlite_url
from tests.mllp.certs import issue, make_ca
from tests.support import INTERLINK, REPO, EngineProcess, engine_env, free_port, start_engine

PASSWORD = "correct-horse-9"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[EngineProcess]:
    proc = start_engine(tmp_path / "data")
    try:
        yield proc
    finally:
        proc.stop()


class Browser:
    """A caller with a cookie jar of one cookie, as the dashboard's browser would be."""

    def __init__(self, engine: EngineProcess) -> None:
        self.engine = engine
        self.cookie = ""
        self.csrf = ""

    def call(self, method: str, path: str, body: Any = None, *, csrf: bool = True
             ) -> tuple[int, Any, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.engine.admin_port, timeout=30)
        headers = {"content-type": "application/json"}
        if self.cookie:
            headers["cookie"] = self.cookie
        if csrf and self.csrf:
            headers["x-interlink-csrf"] = self.csrf
        conn.request(method, f"/api/v1/{path}",
                     body=None if body is None else json.dumps(body), headers=headers)
        answer = conn.getresponse()
        text = answer.read()
        conn.close()
        return answer.status, json.loads(text) if text else None, answer

    def login(self, user: str, password: str) -> tuple[int, Any, http.client.HTTPResponse]:
        status, body, answer = self.call("POST", "auth/login",
                                         {"user": user, "password": password})
        if status == 200:
            self.cookie = answer.getheader("set-cookie", "").split(";")[0]
            self.csrf = body["csrf_token"]
        return status, body, answer


def audit_rows(engine: EngineProcess) -> list[Any]:
    store = open_store(sqlite_url(engine.data_dir))
    try:
        with store.engine.connect() as conn:
            return list(conn.execute(select(audit_events).order_by(audit_events.c.id)))
    finally:
        store.close()


def add_user(engine: EngineProcess, name: str, role: str) -> None:
    status, body = engine.api("POST", "users", {"name": name, "role": role,
                                                "password": PASSWORD})
    assert status == 201, body


def test_nothing_is_served_without_credentials(engine: EngineProcess) -> None:
    """With no users at all, API calls without a token get 401, and so do bad tokens."""
    for method, path in (("GET", "channels"), ("GET", "auth/me"), ("GET", "users"),
                         ("POST", "messages/reprocess")):
        status, _ = engine.api(method, path, {"ids": [1]} if method == "POST" else None,
                               token="")
        assert status == 401, path
    assert engine.api("GET", "channels", token="il_not-a-real-token")[0] == 401
    assert engine.api("GET", "channels", headers={"authorization": "Basic YTpi"},
                      token="")[0] == 401
    status, me = engine.api("GET", "auth/me")
    assert (status, me["role"], me["via"]) == (200, "admin", "local")
    refused = [json.loads(r.detail) for r in audit_rows(engine)
               if r.action == "auth.token_refused"]
    assert [(d["reason"], d["refusals"]) for d in refused] == [
        ("unknown token", 1), ("not a Bearer token", 1)]


def test_viewer_is_refused_content_and_the_refusal_is_audited(engine: EngineProcess) -> None:
    """A logged-in viewer sees channels, gets 403 on an operator route, and it is recorded."""
    add_user(engine, "vera", "viewer")
    vera = Browser(engine)
    status, body, answer = vera.login("vera", PASSWORD)
    assert (status, body["user"], body["role"]) == (200, "vera", "viewer")
    cookie = answer.getheader("set-cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert vera.call("GET", "channels")[0] == 200
    status, body, _ = vera.call("GET", "messages/1")
    assert (status, body) == (403, {"error": "needs the operator role"})
    status, body, _ = vera.call("POST", "messages/reprocess", {"ids": [1]})
    assert (status, body) == (403, {"error": "needs the operator role"})
    refused = [r for r in audit_rows(engine) if r.action == "access.refused"]
    assert len(refused) == 2
    details = [json.loads(r.detail) for r in refused]
    assert {r.actor for r in refused} == {"vera"}
    assert [d["route"] for d in details] == ["GET messages/{id}", "POST messages/reprocess"]
    assert details[0]["path"] == "/api/v1/messages/1" and details[0]["needs"] == "operator"
    assert details[0]["peer"].startswith("127.0.0.1:")


def test_session_changes_need_the_csrf_token_and_logout_ends_it(engine: EngineProcess) -> None:
    """A cookie alone cannot change anything; after logout the cookie is worthless."""
    add_user(engine, "otto", "operator")
    otto = Browser(engine)
    assert otto.login("otto", PASSWORD)[0] == 200
    status, body, _ = otto.call("POST", "tokens", {"name": "script"}, csrf=False)
    assert status == 403 and "X-Interlink-CSRF" in body["error"]
    status, body, _ = otto.call("POST", "tokens", {"name": "script"})
    assert status == 201 and body["role"] == "operator"
    token = body["token"]
    me = otto.call("GET", "auth/me")[1]
    assert (me["user"], me["csrf_token"]) == ("otto", otto.csrf)
    assert otto.call("POST", "auth/logout")[0] == 200
    assert otto.call("GET", "auth/me")[0] == 401
    status, me = engine.api("GET", "auth/me", token=token)
    assert (status, me["user"], me["via"]) == (200, "otto", "token")
    actions = [r.action for r in audit_rows(engine)]
    assert actions.count("access.refused") == 1  # the change without the CSRF token
    assert "auth.login" in actions and "auth.logout" in actions


def test_failed_logins_are_audited_without_the_password_and_lock_out(
        engine: EngineProcess) -> None:
    """Wrong passwords answer 401, are recorded without the password, and the fifth locks."""
    add_user(engine, "ada", "admin")
    ada = Browser(engine)
    for _ in range(5):
        assert ada.login("ada", "Wrong-password-1")[0] == 401
    status, _, answer = ada.login("ada", PASSWORD)
    assert status == 429 and int(answer.getheader("retry-after")) >= 1
    failed = [r for r in audit_rows(engine) if r.action == "auth.login_failed"]
    assert len(failed) == 6
    assert all("Wrong-password" not in r.detail and PASSWORD not in r.detail for r in failed)
    assert json.loads(failed[0].detail)["reason"] == "wrong password"
    assert json.loads(failed[-1].detail)["reason"] == "locked out"


def test_tokens_roles_and_user_changes(engine: EngineProcess) -> None:
    """A token acts with its role, follows its owner's demotion, and stops when revoked."""
    add_user(engine, "ada", "admin")
    status, created = engine.api("POST", "tokens", {"user": "ada", "name": "ci",
                                                    "role": "operator"})
    assert status == 201
    token = created["token"]
    assert engine.api("GET", "channels", token=token)[0] == 200
    assert engine.api("GET", "users", token=token)[0] == 403
    listed = engine.api("GET", "tokens?user=ada")[1]["tokens"]
    assert [t["name"] for t in listed] == ["ci"] and "token" not in listed[0]
    assert listed[0]["last_used_at"] is not None
    assert engine.api("POST", "users/ada/role", {"role": "viewer"})[0] == 200
    assert engine.api("GET", "auth/me", token=token)[1]["role"] == "viewer"
    assert engine.api("DELETE", f"tokens/{created['id']}")[0] == 200
    assert engine.api("GET", "channels", token=token)[0] == 401
    assert engine.api("DELETE", "users/ada")[0] == 200
    assert engine.api("GET", "users")[1] == {"users": []}
    actions = [(r.actor, r.action) for r in audit_rows(engine)]
    for action in ("user.added", "token.created", "user.role_changed", "token.revoked",
                   "user.removed"):
        assert ("cli", action) in actions


def test_users_change_their_own_password_and_an_admin_can_set_one(
        engine: EngineProcess) -> None:
    """The current password is required and wrong guesses count towards the lockout; a
    change ends the user's other sessions, keeps this one, and is audited without either
    password. An administrator's reset ends every session of that user."""
    add_user(engine, "nina", "viewer")
    laptop, phone = Browser(engine), Browser(engine)
    assert laptop.login("nina", PASSWORD)[0] == 200
    assert phone.login("nina", PASSWORD)[0] == 200
    new = "a-new-long-pass-7"
    status, body, _ = laptop.call("POST", "auth/password", {"current": "not-it-at-all",
                                                            "new": new})
    assert (status, body["error"]) == (403, "the current password is wrong")
    assert laptop.call("POST", "auth/password", {"current": PASSWORD, "new": "short"})[0] == 400
    status, body, _ = laptop.call("POST", "auth/password", {"current": PASSWORD, "new": new})
    assert (status, body) == (200, {"user": "nina", "other_sessions_ended": 1})
    assert laptop.call("GET", "auth/me")[0] == 200
    assert phone.call("GET", "auth/me")[0] == 401
    assert Browser(engine).login("nina", PASSWORD)[0] == 401
    assert Browser(engine).login("nina", new)[0] == 200
    reset = "reset-by-admin-3"
    assert engine.api("POST", "users/nina/password", {"password": reset}) == (
        200, {"user": "nina", "sessions_ended": 2})
    assert laptop.call("GET", "auth/me")[0] == 401
    assert engine.api("POST", "users/nobody/password", {"password": reset})[0] == 400
    assert Browser(engine).login("nina", reset)[0] == 200
    rows = [r for r in audit_rows(engine) if r.action.startswith("user.password")]
    assert [(r.actor, r.action) for r in rows] == [
        ("nina", "user.password_change_failed"), ("nina", "user.password_changed"),
        ("cli", "user.password_reset")]
    assert all(secret not in r.detail for r in rows
               for secret in (PASSWORD, new, reset, "not-it-at-all"))


def test_password_guesses_through_the_change_route_lock_out(engine: EngineProcess) -> None:
    """A session cannot be used to guess the password faster than the login page could."""
    add_user(engine, "otto", "viewer")
    otto = Browser(engine)
    assert otto.login("otto", PASSWORD)[0] == 200
    answers = [otto.call("POST", "auth/password", {"current": f"guess-number-{n}",
                                                    "new": "whatever-new-1"})[0]
               for n in range(6)]
    assert answers == [403] * 5 + [429]


def test_the_local_token_file_is_private_and_goes_away_at_stop(tmp_path: Path) -> None:
    """The engine writes admin.token mode 0600 at start and removes it when it stops."""
    proc = start_engine(tmp_path / "data")
    path = proc.data_dir / "admin.token"
    try:
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        assert proc.stop() == 0
    assert not path.exists()


def test_channel_changes_are_audited_with_who_and_where(tmp_path: Path) -> None:
    """pause, resume, undeploy, deploy and reload each leave an event naming the caller."""
    channels = tmp_path / "channels"
    channels.mkdir()
    (tmp_path / "out").mkdir()
    (channels / "lab.yaml").write_text(
        f"name: lab\nsource: {{type: mllp, port: {free_port()}}}\n"
        "destinations:\n  - name: archive\n"
        f"    to: {{type: file, directory: {tmp_path / 'out'}}}\n")
    engine = start_engine(tmp_path / "data", channels=channels)
    try:
        add_user(engine, "ada", "admin")
        token = engine.api("POST", "tokens", {"user": "ada", "name": "ops"})[1]["token"]
        for verb in ("pause", "resume", "undeploy", "deploy"):
            status, body = engine.api("POST", f"channels/lab/{verb}", token=token)
            assert status == 200, body
        assert engine.api("POST", "channels/reload", token=token)[0] == 200
    finally:
        engine.stop()
    events = [(r.actor, r.action, r.channel, json.loads(r.detail)) for r in audit_rows(engine)
              if r.action.startswith("channel")]
    assert [(a, act, ch) for a, act, ch, _ in events] == [
        ("ada", "channel.pause", "lab"), ("ada", "channel.resume", "lab"),
        ("ada", "channel.undeploy", "lab"), ("ada", "channel.deploy", "lab"),
        ("ada", "channels.reload", None)]
    assert all(d["peer"].startswith("127.0.0.1:") for *_, d in events)


def test_admin_port_serves_tls_when_configured(tmp_path: Path) -> None:
    """With admin.tls the API answers over TLS only, the CLI follows, cookies are Secure."""
    ca = make_ca(tmp_path / "pki", "Interlink Test CA")
    leaf = issue(tmp_path / "pki", ca, "admin", server=True)
    config = tmp_path / "interlink.yaml"
    config.write_text(f"admin:\n  tls: {{certificate: {leaf.certificate}, "
                      f"private_key: {leaf.private_key}}}\n")
    engine = start_engine(tmp_path / "data", config=config)
    try:
        listing = engine.run_cli("channels", "list", "--json")
        assert listing.returncode == 0, listing.stderr
        exported = engine.run_cli("messages", "export", "--format", "jsonl")
        assert (exported.returncode, exported.stdout) == (0, ""), exported.stderr
        context = ssl.create_default_context(cafile=str(ca.certificate))
        conn = http.client.HTTPSConnection("127.0.0.1", engine.admin_port, timeout=30,
                                           context=context)
        conn.request("GET", "/api/v1/auth/me",
                     headers={"authorization": f"Bearer {engine.local_token()}"})
        answer = conn.getresponse()
        assert (answer.status, json.loads(answer.read())["via"]) == (200, "local")
        conn.request("POST", "/api/v1/users", body=json.dumps(
            {"name": "ada", "role": "admin", "password": PASSWORD}),
            headers={"authorization": f"Bearer {engine.local_token()}"})
        answer = conn.getresponse()
        assert answer.status == 201, answer.read()
        answer.read()
        conn.request("POST", "/api/v1/auth/login", body=json.dumps(
            {"user": "ada", "password": PASSWORD}))
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200
        assert "; Secure" in answer.getheader("set-cookie", "")
        conn.close()
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain = http.client.HTTPConnection("127.0.0.1", engine.admin_port, timeout=10)
            plain.request("GET", "/api/v1/auth/me")
            plain.getresponse().read()
    finally:
        engine.stop()
    assert "https://" in engine.log.read_text()


def test_the_cli_presents_a_client_certificate_where_the_admin_port_requires_one(
        tmp_path: Path) -> None:
    """With require_client_certificate the CLI without INTERLINK_CLIENT_CERT says what is
    missing; with a certificate from the configured CA it is served."""
    ca = make_ca(tmp_path / "pki", "Interlink Test CA")
    leaf = issue(tmp_path / "pki", ca, "admin", server=True)
    operator = issue(tmp_path / "pki", ca, "operator-laptop", server=False)
    config = tmp_path / "interlink.yaml"
    config.write_text(f"admin:\n  tls: {{certificate: {leaf.certificate}, "
                      f"private_key: {leaf.private_key}, ca_certificates: {ca.certificate}, "
                      "require_client_certificate: true}\n")
    engine = start_engine(tmp_path / "data", config=config)
    try:
        refused = engine.run_cli("channels", "list", "--json")
        assert refused.returncode == 3
        assert "set INTERLINK_CLIENT_CERT and INTERLINK_CLIENT_KEY" in refused.stderr
        env = engine_env(engine.data_dir, engine.port, config, engine.admin_port)
        env |= {"INTERLINK_CLIENT_CERT": str(operator.certificate),
                "INTERLINK_CLIENT_KEY": str(operator.private_key)}
        served = subprocess.run([*INTERLINK, "channels", "list", "--json"], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert served.returncode == 0, served.stderr
        assert json.loads(served.stdout)["channels"] == []
    finally:
        engine.stop()


def test_admin_port_beyond_loopback_without_tls_is_warned_about(tmp_path: Path) -> None:
    """Binding every interface without TLS works, with a loud warning in the log."""
    config = tmp_path / "interlink.yaml"
    config.write_text("admin:\n  interface: 0.0.0.0\n")
    engine = start_engine(tmp_path / "data", config=config)
    engine.stop()
    assert "ADMIN API WITHOUT TLS ON A NON-LOOPBACK INTERFACE (0.0.0.0)" in engine.log.read_text()
