"""`/api/v1/users` and `/api/v1/tokens`: people who may use the API, and scripts' tokens.

Administrators list, add and remove users and change their roles. Everyone lists, creates
and revokes their own API tokens (an administrator anyone's); a token is shown once, in
the answer that creates it. Every change is one transaction with its audit event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.threads import deferToThread

from engine.access import directory
from engine.access.passwords import hash_password
from engine.api.routing import Answer, ApiRequest, BadRequest, NotFound, Principal, Role, Route
from engine.audit import AuditEvent
from engine.store.store import now_us

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from engine.service import EngineService


def _body(request: ApiRequest) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object")
    return body


def _event(request: ApiRequest, action: str, **detail: Any) -> AuditEvent:
    assert request.principal is not None
    return AuditEvent(now_us(), request.principal.name, action, None, None,
                      {"peer": request.peer, **detail})


def routes(engine: EngineService) -> list[Route]:
    """User and token administration."""
    gate = engine.access

    async def guarded(call: Any) -> Any:
        """Run a change; a refused one (taken name, unknown user…) answers 400."""
        try:
            return await call
        except directory.AccessError as error:
            raise BadRequest(str(error)) from None

    async def list_users(request: ApiRequest) -> Answer:
        found = await gate.read(directory.list_users)
        return Answer(200, {"users": [u.public() for u in found]})

    async def add_user(request: ApiRequest) -> Answer:
        body = _body(request)
        try:
            name = directory.check_name(body.get("name", ""))
            role = directory.parse_role(str(body.get("role", "")))
            password = directory.check_password(body.get("password"))
        except directory.AccessError as error:
            raise BadRequest(str(error)) from None
        hashed = await deferToThread(hash_password, password, gate.password_parameters)
        now = now_us()

        def change(conn: Connection) -> tuple[directory.User, list[AuditEvent]]:
            user = directory.add_user(conn, name, role, hashed, now)
            return user, [_event(request, "user.added", user=name, role=role.name.lower())]

        user = await guarded(gate.change(change))
        return Answer(201, user.public())

    async def remove_user(request: ApiRequest) -> Answer:
        name = request.params["name"]
        now = now_us()

        def change(conn: Connection) -> tuple[int, list[AuditEvent]]:
            revoked = directory.remove_user(conn, name, now)
            return revoked, [_event(request, "user.removed", user=name, tokens_revoked=revoked)]

        revoked = await guarded(gate.change(change))
        ended = gate.sessions.close_user(name)
        return Answer(200, {"removed": name, "tokens_revoked": revoked, "sessions_ended": ended})

    async def set_role(request: ApiRequest) -> Answer:
        name = request.params["name"]
        try:
            role = directory.parse_role(str(_body(request).get("role", "")))
        except directory.AccessError as error:
            raise BadRequest(str(error)) from None
        now = now_us()

        def change(conn: Connection) -> tuple[directory.Role, list[AuditEvent]]:
            old = directory.set_role(conn, name, role, now)
            return old, [_event(request, "user.role_changed", user=name,
                                old_role=old.name.lower(), role=role.name.lower())]

        old = await guarded(gate.change(change))
        return Answer(200, {"user": name, "old_role": old.name.lower(),
                            "role": role.name.lower()})

    async def reset_password(request: ApiRequest) -> Answer:
        name = request.params["name"]
        try:
            password = directory.check_password(_body(request).get("password"))
        except directory.AccessError as error:
            raise BadRequest(str(error)) from None
        hashed = await deferToThread(hash_password, password, gate.password_parameters)
        now = now_us()

        def change(conn: Connection) -> tuple[None, list[AuditEvent]]:
            directory.set_password(conn, name, hashed, now)
            return None, [_event(request, "user.password_reset", user=name)]

        await guarded(gate.change(change))
        ended = gate.sessions.close_user(name)
        return Answer(200, {"user": name, "sessions_ended": ended})

    def may_manage(principal: Principal, owner: str) -> bool:
        return principal.role >= Role.ADMIN or principal.name == owner

    async def list_tokens(request: ApiRequest) -> Answer:
        principal = request.principal
        assert principal is not None
        wanted = request.query("user")
        if principal.role < Role.ADMIN:
            wanted = principal.name
        return Answer(200, {"tokens": await gate.read(directory.list_tokens, wanted)})

    async def create_token(request: ApiRequest) -> Answer:
        principal = request.principal
        assert principal is not None
        body = _body(request)
        owner = body.get("user") or principal.name
        if not isinstance(owner, str) or not may_manage(principal, owner):
            return Answer(403, {"error": "only an administrator makes tokens for others"})
        try:
            name = directory.check_name(body.get("name", ""), "token name")
            role = directory.parse_role(body["role"]) if body.get("role") else None
        except directory.AccessError as error:
            raise BadRequest(str(error)) from None
        if role is None and principal.via == "token" and owner == principal.name:
            role = principal.role  # a token never mints one stronger than itself
        if role is not None and role > principal.role:
            raise BadRequest("a token cannot have more than the caller's role")
        now = now_us()

        def change(conn: Connection) -> tuple[tuple[dict[str, Any], str], list[AuditEvent]]:
            record, token = directory.create_token(conn, owner, name, role, now)
            return (record, token), [_event(request, "token.created", user=owner,
                                            token_id=record["id"], name=name,
                                            role=record["role"])]

        record, token = await guarded(gate.change(change))
        return Answer(201, {**record, "token": token})

    async def revoke_token(request: ApiRequest) -> Answer:
        principal = request.principal
        assert principal is not None
        try:
            token_id = int(request.params["id"])
        except ValueError:
            raise BadRequest("a token id is a number") from None
        record = await gate.read(directory.get_token, token_id)
        if record is None or not may_manage(principal, record["user"]):
            raise NotFound(f"no token {token_id} of yours")
        now = now_us()

        def change(conn: Connection) -> tuple[None, list[AuditEvent]]:
            directory.revoke_token(conn, token_id, now)
            return None, [_event(request, "token.revoked", user=record["user"],
                                 token_id=token_id, name=record["name"])]

        await gate.change(change)
        return Answer(200, {"revoked": token_id})

    return [
        Route("GET", "users", list_users, Role.ADMIN, "Users and their roles"),
        Route("POST", "users", add_user, Role.ADMIN,
              "Add a user: name, role (viewer, operator, admin), password"),
        Route("DELETE", "users/{name}", remove_user, Role.ADMIN,
              "Remove a user, revoke their tokens and end their sessions"),
        Route("POST", "users/{name}/role", set_role, Role.ADMIN, "Change a user's role"),
        Route("POST", "users/{name}/password", reset_password, Role.ADMIN,
              "Set a user's password (password); ends their sessions"),
        Route("GET", "tokens", list_tokens, Role.VIEWER,
              "The caller's API tokens (an administrator: everyone's, or ?user=)"),
        Route("POST", "tokens", create_token, Role.VIEWER,
              "Create an API token (name, optional role and user); shown once"),
        Route("DELETE", "tokens/{id}", revoke_token, Role.VIEWER, "Revoke an API token"),
    ]
