"""`/api/v1/auth`: log in with a password for a session cookie, log out, and who am I.

The session cookie is HttpOnly and SameSite=Strict. A change (POST, DELETE…) made with the
cookie must also carry the `X-Interlink-CSRF` header with the `csrf_token` that login
(and `auth/me`) answered; scripts use `Authorization: Bearer <API token>` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.access import directory
from engine.access.gate import LoginRefused
from engine.access.sessions import CSRF_HEADER, SESSION_COOKIE
from engine.api.routing import Answer, ApiRequest, BadRequest, Role, Route

if TYPE_CHECKING:
    from engine.service import EngineService


def session_cookie(value: str, *, secure: bool, clear: bool = False) -> str:
    """The Set-Cookie value of a session (or of its removal)."""
    parts = [f"{SESSION_COOKIE}={'' if clear else value}", "Path=/", "HttpOnly",
             "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    if clear:
        parts.append("Max-Age=0")
    return "; ".join(parts)


def routes(engine: EngineService) -> list[Route]:
    """Login, logout and the caller's identity."""
    gate = engine.access
    cfg = engine.config
    secure = cfg.access.secure_cookie if cfg.access.secure_cookie is not None \
        else cfg.admin.tls is not None

    async def login(request: ApiRequest) -> Answer:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("user"), str) \
                or not isinstance(body.get("password"), str):
            raise BadRequest('expected a JSON body {"user": name, "password": password}')
        try:
            done = await gate.login(body["user"], body["password"], request.raw)
        except LoginRefused as refused:
            headers = ({"retry-after": str(max(1, round(refused.retry_after)))}
                       if refused.status == 429 else {})
            return Answer(refused.status, {"error": str(refused)}, headers=headers)
        return Answer(200, {"user": done.session.user, "role": done.role.name.lower(),
                            "csrf_token": done.session.csrf, "csrf_header": CSRF_HEADER},
                      headers={"set-cookie": session_cookie(done.session.id, secure=secure)})

    async def logout(request: ApiRequest) -> Answer:
        session = await gate.logout(request.raw)
        return Answer(200, {"logged_out": session is not None},
                      headers={"set-cookie": session_cookie("", secure=secure, clear=True)})

    async def change_password(request: ApiRequest) -> Answer:
        principal = request.principal
        assert principal is not None
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("current"), str) \
                or not isinstance(body.get("new"), str):
            raise BadRequest('expected a JSON body {"current": password, "new": password}')
        try:
            ended = await gate.change_password(principal.name, body["current"], body["new"],
                                               request.raw)
        except directory.AccessError as error:
            raise BadRequest(str(error)) from None
        except LoginRefused as refused:
            headers = ({"retry-after": str(max(1, round(refused.retry_after)))}
                       if refused.status == 429 else {})
            return Answer(refused.status, {"error": str(refused)}, headers=headers)
        return Answer(200, {"user": principal.name, "other_sessions_ended": ended})

    async def me(request: ApiRequest) -> Answer:
        principal = request.principal
        assert principal is not None
        answer = {"user": principal.name, "role": principal.role.name.lower(),
                  "via": principal.via}
        session = gate.session_of(request.raw) if principal.via == "session" else None
        if session is not None:
            answer["csrf_token"] = session.csrf
        return Answer(200, answer)

    return [
        Route("POST", "auth/login", login, None,
              "Log in with user and password: sets the session cookie, answers the CSRF token"),
        Route("POST", "auth/logout", logout, None, "End the caller's session"),
        Route("GET", "auth/me", me, Role.VIEWER, "Who the caller is, their role and CSRF token"),
        Route("POST", "auth/password", change_password, Role.VIEWER,
              "Change the caller's own password (current, new); ends their other sessions"),
    ]
