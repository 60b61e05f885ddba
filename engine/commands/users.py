"""`interlink users …`: add, remove and list users, change roles and passwords, make API
tokens.

When an engine answers on the admin port (with the local admin token or
INTERLINK_TOKEN), the change goes through its API; otherwise straight to the store. Both
ways, the change and its audit event (actor `cli:<os user>`) commit together. The engine
keeps the tail of the audit chain in memory on SQLite, so a second process must not
append to it while the engine runs: that is why a running engine is asked to do it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from engine.access import directory
from engine.access.passwords import hash_password
from engine.access.tokens import read_local_token
from engine.audit import AuditEvent
from engine.commands.common import add_config_option, load_or_exit
from engine.commands.control import TOKEN_ENV, EngineUnreachable, os_user, request
from engine.config import EngineConfig

T = TypeVar("T")


class Failed(Exception):
    """The change was refused; the text says why."""


class Users(Protocol):
    def add(self, name: str, role: str, password: str) -> dict[str, Any]: ...
    def remove(self, name: str) -> dict[str, Any]: ...
    def list(self) -> list[dict[str, Any]]: ...
    def set_role(self, name: str, role: str) -> dict[str, Any]: ...
    def set_password(self, name: str, password: str) -> dict[str, Any]: ...
    def token(self, user: str, name: str, role: str | None) -> dict[str, Any]: ...
    def tokens(self, user: str | None) -> list[dict[str, Any]]: ...
    def revoke(self, token_id: int) -> dict[str, Any]: ...


class ApiUsers:
    """Through a running engine's admin API."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        code, answer = request(self.config, method, path, body)
        if not 200 <= code < 300:
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise Failed(f"the engine answered {code}: {error}")
        return answer

    def add(self, name: str, role: str, password: str) -> dict[str, Any]:
        return dict(self._call("POST", "users", {"name": name, "role": role,
                                                 "password": password}))

    def remove(self, name: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"users/{name}"))

    def list(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "users")["users"])

    def set_role(self, name: str, role: str) -> dict[str, Any]:
        return dict(self._call("POST", f"users/{name}/role", {"role": role}))

    def set_password(self, name: str, password: str) -> dict[str, Any]:
        return dict(self._call("POST", f"users/{name}/password", {"password": password}))

    def token(self, user: str, name: str, role: str | None) -> dict[str, Any]:
        body = {"user": user, "name": name, **({"role": role} if role else {})}
        return dict(self._call("POST", "tokens", body))

    def tokens(self, user: str | None) -> list[dict[str, Any]]:
        return list(self._call("GET", "tokens" + (f"?user={user}" if user else ""))["tokens"])

    def revoke(self, token_id: int) -> dict[str, Any]:
        return dict(self._call("DELETE", f"tokens/{token_id}"))


class StoreUsers:
    """Straight to the store, for when no engine runs (or on a shared PostgreSQL)."""

    def __init__(self, config: EngineConfig) -> None:
        from engine.store.ownership import engine_holds, is_embedded
        from engine.store.store import open_store

        if is_embedded(config.store_url()) and engine_holds(config.data_dir):
            raise Failed("an engine is running on this store but its admin API did not "
                         "answer with our credentials; set INTERLINK_TOKEN or fix admin: in "
                         "the engine file (writing beside it would fork the audit chain)")
        self.store = open_store(config.store_url())
        self.actor = f"cli:{os_user()}"

    def close(self) -> None:
        self.store.close()

    def _event(self, action: str, **detail: Any) -> AuditEvent:
        from engine.store.store import now_us

        return AuditEvent(now_us(), self.actor, action, None, None, {"peer": "local", **detail})

    def _change(self, fn: Callable[[Any], tuple[T, list[AuditEvent]]]) -> T:
        try:
            return self.store.apply_and_audit(fn)
        except directory.AccessError as error:
            raise Failed(str(error)) from None

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with self.store.engine.connect() as conn:
            return fn(conn, *args)

    def add(self, name: str, role: str, password: str) -> dict[str, Any]:
        from engine.store.store import now_us

        try:
            directory.check_name(name)
            parsed = directory.parse_role(role)
            directory.check_password(password)
        except directory.AccessError as error:
            raise Failed(str(error)) from None
        hashed, now = hash_password(password), now_us()
        return self._change(lambda c: (
            directory.add_user(c, name, parsed, hashed, now).public(),
            [self._event("user.added", user=name, role=parsed.name.lower())]))

    def remove(self, name: str) -> dict[str, Any]:
        from engine.store.store import now_us

        now = now_us()

        def change(conn: Any) -> tuple[dict[str, Any], list[AuditEvent]]:
            revoked = directory.remove_user(conn, name, now)
            return ({"removed": name, "tokens_revoked": revoked},
                    [self._event("user.removed", user=name, tokens_revoked=revoked)])

        return self._change(change)

    def list(self) -> list[dict[str, Any]]:
        return [u.public() for u in self._read(directory.list_users)]

    def set_role(self, name: str, role: str) -> dict[str, Any]:
        from engine.store.store import now_us

        try:
            parsed = directory.parse_role(role)
        except directory.AccessError as error:
            raise Failed(str(error)) from None
        now = now_us()

        def change(conn: Any) -> tuple[dict[str, Any], list[AuditEvent]]:
            old = directory.set_role(conn, name, parsed, now).name.lower()
            return ({"user": name, "old_role": old, "role": parsed.name.lower()},
                    [self._event("user.role_changed", user=name, old_role=old,
                                 role=parsed.name.lower())])

        return self._change(change)

    def set_password(self, name: str, password: str) -> dict[str, Any]:
        from engine.store.store import now_us

        try:
            directory.check_password(password)
        except directory.AccessError as error:
            raise Failed(str(error)) from None
        hashed, now = hash_password(password), now_us()

        def change(conn: Any) -> tuple[dict[str, Any], list[AuditEvent]]:
            directory.set_password(conn, name, hashed, now)
            return {"user": name}, [self._event("user.password_reset", user=name)]

        return self._change(change)

    def token(self, user: str, name: str, role: str | None) -> dict[str, Any]:
        from engine.store.store import now_us

        try:
            parsed = directory.parse_role(role) if role else None
        except directory.AccessError as error:
            raise Failed(str(error)) from None
        now = now_us()

        def change(conn: Any) -> tuple[dict[str, Any], list[AuditEvent]]:
            record, token = directory.create_token(conn, user, name, parsed, now)
            return ({**record, "token": token},
                    [self._event("token.created", user=user, token_id=record["id"],
                                 name=name, role=record["role"])])

        return self._change(change)

    def tokens(self, user: str | None) -> list[dict[str, Any]]:
        return self._read(directory.list_tokens, user)

    def revoke(self, token_id: int) -> dict[str, Any]:
        from engine.store.store import now_us

        now = now_us()

        def change(conn: Any) -> tuple[dict[str, Any], list[AuditEvent]]:
            record = directory.get_token(conn, token_id)
            if record is None:
                raise directory.AccessError(f"no token {token_id}")
            directory.revoke_token(conn, token_id, now)
            return ({"revoked": token_id},
                    [self._event("token.revoked", user=record["user"], token_id=token_id,
                                 name=record["name"])])

        return self._change(change)


def register(sub: Any) -> None:
    """Add `users add|remove|list|role|password|token|tokens|revoke`."""
    parser = sub.add_parser("users", help="users of the admin API and dashboard, API tokens")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    add = actions.add_parser("add", help="add a user (asks for the password)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("viewer", "operator", "admin"),
                     type=str.lower)
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    remove = actions.add_parser("remove", help="remove a user and revoke their tokens")
    remove.add_argument("name")
    lst = actions.add_parser("list", help="users and their roles")
    lst.add_argument("--json", action="store_true")
    role = actions.add_parser("role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=("viewer", "operator", "admin"), type=str.lower)
    password = actions.add_parser("password", help="set a user's password (asks for it); "
                                  "ends their sessions")
    password.add_argument("name")
    password.add_argument("--password-stdin", action="store_true",
                          help="read the password from the first line of standard input")
    token = actions.add_parser("token", help="make an API token for a user (shown once)")
    token.add_argument("name", help="the user the token speaks for")
    token.add_argument("--name", dest="token_name", default="cli", help="what it is for")
    token.add_argument("--role", choices=("viewer", "operator", "admin"), type=str.lower,
                       help="at most the user's role (the default)")
    tokens = actions.add_parser("tokens", help="list API tokens (never their secrets)")
    tokens.add_argument("name", nargs="?", help="only this user's")
    revoke = actions.add_parser("revoke", help="revoke an API token by id")
    revoke.add_argument("id", type=int)
    for p in (add, remove, lst, role, password, token, tokens, revoke):
        add_config_option(p)
        p.set_defaults(handler=handle)


def read_password(args: argparse.Namespace) -> str:
    """From stdin with --password-stdin, else asked twice on the terminal."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise Failed("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Again: ") != first:
        raise Failed("the passwords differ")
    return first


def backend(config: EngineConfig) -> Users:
    """The running engine's API when one answers with our credentials, else the store."""
    import os

    if os.environ.get(TOKEN_ENV) or read_local_token(config.data_dir):
        api = ApiUsers(config)
        try:
            request(config, "GET", "auth/me")
            return api
        except EngineUnreachable:
            if os.environ.get(TOKEN_ENV):
                raise
    return StoreUsers(config)


def handle(args: argparse.Namespace) -> int:
    config = load_or_exit(args)
    try:
        password = read_password(args) if args.action in ("add", "password") else ""
        users = backend(config)
        try:
            return run(args, users, password)
        finally:
            if isinstance(users, StoreUsers):
                users.close()
    except (Failed, EngineUnreachable) as error:
        print(f"interlink users {args.action}: {error}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, users: Users, password: str) -> int:
    if args.action == "add":
        user = users.add(args.name, args.role, password)
        print(f"added {user['name']} ({user['role']})")
    elif args.action == "remove":
        done = users.remove(args.name)
        print(f"removed {args.name}; tokens revoked: {done['tokens_revoked']}")
    elif args.action == "list":
        found = users.list()
        if args.json:
            print(json.dumps(found, indent=2))
        else:
            for user in found:
                print(f"{user['name']:32} {user['role']}")
    elif args.action == "role":
        done = users.set_role(args.name, args.role)
        print(f"{args.name}: {done['old_role']} -> {done['role']}")
    elif args.action == "password":
        users.set_password(args.name, password)
        print(f"{args.name}: password set")
    elif args.action == "token":
        made = users.token(args.name, args.token_name, args.role)
        print(f"token {made['id']} for {made['user']} ({made['role']}), shown only now:",
              file=sys.stderr)
        print(made["token"])
    elif args.action == "tokens":
        for t in users.tokens(args.name):
            state = "revoked" if t["revoked_at"] else "active"
            print(f"{t['id']:>5} {t['user']:24} {t['name']:24} {t['role']:9} {state}")
    elif args.action == "revoke":
        users.revoke(args.id)
        print(f"revoked token {args.id}")
    return 0
