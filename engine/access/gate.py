"""Who is calling the admin API: API tokens, session cookies and the local admin token.

`AccessGate.authenticate` is the router's authenticator. A Bearer token is either the
local admin token (written fresh at each start for `interlink` commands on this machine)
or an API token from the store; a browser presents the session cookie from
`POST /api/v1/auth/login`, and its state-changing calls must echo the session's CSRF
token in the `X-Interlink-CSRF` header. Every role is read from the store on each call,
so a removed or demoted user loses access at once. Without credentials there is no
principal: the API never answers PHI to an anonymous caller, even with no users at all.
Credentials presented and refused (a token unknown, revoked or of a removed user, an
Authorization header that is not Bearer) are audited as `auth.token_refused`; a cookie
for an ended session is not: sessions end by design every day.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.web import server

from engine.access import directory
from engine.access.passwords import (
    DEFAULT_PARAMETERS,
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)
from engine.access.refusals import RefusalDigest
from engine.access.sessions import (
    CSRF_HEADER,
    SESSION_COOKIE,
    LoginThrottle,
    Session,
    SessionStore,
)
from engine.access.tokens import remove_local_token, write_local_token
from engine.api.routing import Principal, Role
from engine.audit import AuditEvent
from engine.store.store import Store, now_us

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from engine.service import EngineService

log = Logger()
T = TypeVar("T")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL_ACTOR_HEADER = "X-Interlink-Actor"
TOKEN_TOUCH_INTERVAL_US = 60_000_000
"""Record a token's last use at most once a minute, not on every call."""


class CsrfRefused(Exception):
    """A cookie-authenticated change without the session's CSRF token (answered 403)."""


class LoginRefused(Exception):
    """A login that did not succeed; `status` is 401 (wrong) or 429 (locked out)."""

    def __init__(self, status: int, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """A successful login: the new session and the user's role."""

    session: Session
    role: Role


def peer_host(request: server.Request) -> str:
    """The caller's address without the port: what a per-peer lockout counts."""
    return str(getattr(request.getClientAddress(), "host", ""))


def peer_of(request: server.Request) -> str:
    address = request.getClientAddress()
    return f"{getattr(address, 'host', '')}:{getattr(address, 'port', '')}"


def _local_actor(request: server.Request) -> str:
    """`cli:<os user>` as the `interlink` command names itself, cut to a safe name."""
    claimed = (request.getHeader(LOCAL_ACTOR_HEADER) or "").removeprefix("cli:")
    try:
        return "cli:" + directory.check_name(claimed[:100])
    except directory.AccessError:
        return "cli"


class AccessGate:
    """Authentication, sessions and login lockout for one engine's admin API."""

    def __init__(self, engine: EngineService, clock: Any = None) -> None:
        self.engine = engine
        cfg = engine.config.access
        clock = clock or engine.reactor
        self.sessions = SessionStore(clock, cfg.session_lifetime_seconds,
                                     cfg.idle_timeout_seconds)
        self.throttle = LoginThrottle(clock, cfg.max_failed_logins,
                                      cfg.lockout_seconds, cfg.max_lockout_seconds)
        self.peer_limit = cfg.max_failed_logins_per_peer
        self.refusals = RefusalDigest(clock)
        self.password_parameters = DEFAULT_PARAMETERS
        self._local_token: str | None = None

    # -- the local admin token ------------------------------------------------------------

    def write_local_token(self) -> None:
        """A fresh local admin token in `<data_dir>/admin.token` (mode 0600)."""
        self._local_token = write_local_token(self.engine.config.data_dir)

    def forget_local_token(self) -> None:
        """Remove the token file at shutdown, so it never outlives the engine that wrote it."""
        if self._local_token is not None:
            remove_local_token(self.engine.config.data_dir, self._local_token)
            self._local_token = None

    # -- store access ---------------------------------------------------------------------

    @property
    def store(self) -> Store:
        assert self.engine.store is not None
        return self.engine.store

    def read(self, fn: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        """Run `fn(connection, *args)` on a reader thread."""
        store = self.store

        def run() -> T:
            with store.engine.connect() as conn:
                return fn(conn, *args)

        return self.engine._read(run)

    def change(self, fn: Callable[[Connection], tuple[T, list[AuditEvent]]]
               ) -> defer.Deferred[T]:
        """Run a change and its audit events in one transaction on the writer thread."""
        assert self.engine.writer is not None
        return self.engine.writer.call(self.store.apply_and_audit, fn)

    # -- authentication -------------------------------------------------------------------

    async def authenticate(self, request: server.Request) -> Principal | None:
        """The caller of one request, or None when they presented nothing valid."""
        header = request.getHeader("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer":
                await self._refused(request, "anonymous", {
                    "reason": "not a Bearer token",
                    "scheme": scheme if scheme.isalpha() and len(scheme) <= 20 else "?"})
                return None
            if not value.strip():
                await self._refused(request, "anonymous", {"reason": "empty token"})
                return None
            return await self._bearer(request, value.strip())
        cookie = request.getCookie(SESSION_COOKIE.encode())
        if cookie:
            return await self._session(request, cookie.decode("ascii", "replace"))
        return None

    async def _bearer(self, request: server.Request, token: str) -> Principal | None:
        local = self._local_token
        if local is not None and hmac.compare_digest(token.encode(), local.encode()):
            return Principal(_local_actor(request), Role.ADMIN, via="local")
        grant = await self.read(directory.find_token, token)
        if grant is None:
            why = await self.read(directory.why_refused, token)
            await self._refused(request, why.get("user", "anonymous"), why)
            return None
        now = now_us()
        if grant.last_used_at is None or now - grant.last_used_at >= TOKEN_TOUCH_INTERVAL_US:
            self._touch(grant.id, now)
        return Principal(grant.user, grant.role, via="token")

    async def _refused(self, request: server.Request, actor: str,
                       detail: dict[str, str]) -> None:
        """`auth.token_refused`, digested per peer and kind (`RefusalDigest`)."""
        key = "|".join((peer_host(request), *detail.values()))
        count = self.refusals.refused(key)
        if count:
            await self.engine.audit_action(actor, "auth.token_refused", peer=peer_of(request),
                                           detail={**detail, "refusals": count})

    def _touch(self, token_id: int, now: int) -> None:
        store, writer = self.store, self.engine.writer
        assert writer is not None

        def touch() -> None:
            with store.engine.begin() as conn:
                directory.touch_token(conn, token_id, now)

        writer.call(touch).addErrback(
            lambda f: log.warn("could not record a token's use: {e}", e=f.type.__name__))

    async def _session(self, request: server.Request, session_id: str) -> Principal | None:
        session = self.sessions.get(session_id)
        if session is None:
            return None
        if request.method.decode() not in SAFE_METHODS and not _is_login(request):
            sent = request.getHeader(CSRF_HEADER) or ""
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                await self.engine.audit_action(session.user, "access.refused",
                                               peer=peer_of(request), detail={
                                                   "path": request.path.decode("utf-8",
                                                                               "replace"),
                                                   "reason": "no CSRF token"})
                raise CsrfRefused(f"a change made with a session cookie needs the "
                                  f"{CSRF_HEADER} header with the token login answered")
        user = await self.read(directory.get_user, session.user)
        if user is None:
            self.sessions.close(session_id)
            return None
        return Principal(user.name, user.role, via="session")

    def session_of(self, request: server.Request) -> Session | None:
        """The live session a request's cookie names, if any."""
        cookie = request.getCookie(SESSION_COOKIE.encode())
        return self.sessions.get(cookie.decode("ascii", "replace")) if cookie else None

    # -- logging in -----------------------------------------------------------------------

    async def login(self, name: str, password: str, request: server.Request) -> LoggedIn:
        """Check a password (with lockout) and open a session; every outcome is audited."""
        peer = peer_of(request)
        keys = self._throttle_keys(name, request)
        wait = self.throttle.retry_after(*keys)
        if wait > 0:
            if self.throttle.first_refusal(*keys):
                await self.engine.audit_action(name, "auth.login_failed", peer=peer,
                                               detail={"reason": "locked out"})
            raise LoginRefused(429, "too many failed logins; try again later", wait)
        found = await self._verified(name, password, keys)
        if found is None:
            await self.engine.audit_action("anonymous", "auth.login_failed", peer=peer,
                                           detail={"user": name, "reason": "no such user"})
            raise LoginRefused(401, "wrong user name or password")
        if found is False:
            await self.engine.audit_action(name, "auth.login_failed", peer=peer,
                                           detail={"user": name, "reason": "wrong password"})
            raise LoginRefused(401, "wrong user name or password")
        user, stored = found
        self.throttle.succeeded(keys[1])
        if needs_rehash(stored, self.password_parameters):
            await self._rehash(user.name, password)
        session = self.sessions.open(user.name)
        await self.engine.audit_action(user.name, "auth.login", peer=peer,
                                       detail={"role": user.role.name.lower()})
        return LoggedIn(session, user.role)

    async def change_password(self, name: str, current: str, new: str,
                              request: server.Request) -> int:
        """A user's own password change: the current one is checked as a login checks
        it (and counts towards the same lockout); the user's other sessions end.
        Returns how many sessions ended. Raises LoginRefused (403, 429) or AccessError."""
        peer = peer_of(request)
        keys = self._throttle_keys(name, request)
        wait = self.throttle.retry_after(*keys)
        if wait > 0:
            raise LoginRefused(429, "too many failed attempts; try again later", wait)
        directory.check_password(new)
        if not await self._verified(name, current, keys):
            await self.engine.audit_action(name, "user.password_change_failed", peer=peer,
                                           detail={"user": name, "reason": "wrong password"})
            raise LoginRefused(403, "the current password is wrong")
        fresh = await deferToThread(hash_password, new, self.password_parameters)
        now = now_us()
        event = AuditEvent(now, name, "user.password_changed", None, None,
                           {"peer": peer, "user": name})
        await self.change(lambda conn: (directory.set_password(conn, name, fresh, now),
                                        [event]))
        session = self.session_of(request)
        return self.sessions.close_user(name, keep=session.id if session else None)

    @staticmethod
    def _throttle_keys(name: str, request: server.Request) -> tuple[str, str]:
        """The lockout counters a password attempt counts against: the user's, the peer's."""
        return f"user:{name}", f"peer:{peer_host(request)}"

    async def _verified(self, name: str, password: str, keys: tuple[str, str]
                        ) -> tuple[directory.User, str] | Literal[False] | None:
        """The user and stored hash when `password` is theirs; None for no such user, False
        for a wrong password. A miss counts against both lockout keys, a match clears the
        user's. An unknown user is checked against a dummy hash, so both take as long."""
        found = await self.read(directory.password_hash_of, name)
        stored = found[1] if found else dummy_hash(self.password_parameters)
        matches = await deferToThread(verify_password, password, stored)
        if found is None or not matches:
            self.throttle.failed(keys[0])
            self.throttle.failed(keys[1], self.peer_limit)
            return None if found is None else False
        self.throttle.succeeded(keys[0])
        return found

    async def _rehash(self, name: str, password: str) -> None:
        """Raise an old hash to the current parameters now that the password is known."""
        fresh = await deferToThread(hash_password, password, self.password_parameters)
        now = now_us()
        await self.change(lambda conn: (directory.set_password(conn, name, fresh, now), []))

    async def logout(self, request: server.Request) -> Session | None:
        """End the caller's session, if they have one; audited."""
        cookie = request.getCookie(SESSION_COOKIE.encode())
        session = self.sessions.close(cookie.decode("ascii", "replace")) if cookie else None
        if session is not None:
            await self.engine.audit_action(session.user, "auth.logout", peer=peer_of(request))
        return session


def _is_login(request: server.Request) -> bool:
    """A login never relies on an earlier session, so an old cookie cannot block it."""
    return [p for p in request.postpath if p] == [b"auth", b"login"]
