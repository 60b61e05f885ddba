"""Login sessions and failed-login lockout, kept in the engine's memory.

Sessions are not stored: an engine restart logs everyone out (acceptable for a short-lived
dashboard login), no session secret ever rests on disk, and following the idle timeout
costs no store write per request. The admin port belongs to one node, so a browser talks
to the node that issued its session. Time comes from an injected clock (`seconds()`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Protocol

SESSION_COOKIE = "interlink_session"
CSRF_HEADER = "X-Interlink-CSRF"


class Clock(Protocol):
    def seconds(self) -> float: ...


@dataclass(slots=True)
class Session:
    """One logged-in browser: whose it is, its CSRF token and its times."""

    id: str
    user: str
    csrf: str
    created: float
    last_seen: float


@dataclass(slots=True)
class SessionStore:
    """Sessions by id, ending after a lifetime or an idle period, whichever comes first."""

    clock: Clock
    lifetime: float
    idle: float
    _sessions: dict[str, Session] = field(default_factory=dict)

    def open(self, user: str) -> Session:
        """A new session for a user who just proved their password."""
        self._expire()
        now = self.clock.seconds()
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(24), now, now)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session with this id (its idle time restarts), or None."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self.clock.seconds()
        if self._ended(session, now):
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    def close(self, session_id: str) -> Session | None:
        """Log a session out; returns it if it existed."""
        return self._sessions.pop(session_id, None)

    def close_user(self, user: str, keep: str | None = None) -> int:
        """End every session of a user (removed, role or password changed) but `keep`;
        returns how many ended."""
        ended = [sid for sid, s in self._sessions.items() if s.user == user and sid != keep]
        for sid in ended:
            del self._sessions[sid]
        return len(ended)

    def __len__(self) -> int:
        return len(self._sessions)

    def _ended(self, session: Session, now: float) -> bool:
        return now - session.created >= self.lifetime or now - session.last_seen >= self.idle

    def _expire(self) -> None:
        now = self.clock.seconds()
        for sid in [sid for sid, s in self._sessions.items() if self._ended(s, now)]:
            del self._sessions[sid]


@dataclass(slots=True)
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    last: float = 0.0
    reported_until: float = 0.0


@dataclass(slots=True)
class LoginThrottle:
    """Failed logins in a row per key (a user name, a peer address) lock that key out.

    After `limit` failures the key is refused for `lockout` seconds, doubling with every
    further failure up to `max_lockout`; a successful login clears the user's count.
    Attempts while locked are refused without checking the password and do not count.
    """

    clock: Clock
    limit: int
    lockout: float
    max_lockout: float
    _keys: dict[str, _Failures] = field(default_factory=dict)

    MAX_KEYS = 10_000

    def retry_after(self, *keys: str) -> float:
        """Seconds until every key may try again (0 when none is locked)."""
        now = self.clock.seconds()
        waits = [f.locked_until - now for k in keys if (f := self._keys.get(k)) is not None]
        return max([0.0, *waits])

    def failed(self, key: str, limit: int | None = None) -> None:
        """Count one failure; lock the key once it reaches its limit."""
        now = self.clock.seconds()
        if len(self._keys) >= self.MAX_KEYS:
            self._forget_old(now)
        entry = self._keys.setdefault(key, _Failures())
        entry.count += 1
        entry.last = now
        over = entry.count - (limit or self.limit)
        if over >= 0:
            entry.locked_until = now + min(self.lockout * 2 ** min(over, 32), self.max_lockout)

    def first_refusal(self, *keys: str) -> bool:
        """True once per lockout: the refusal worth recording; repeats are not.

        A client hammering a locked account would otherwise write an audit row per try.
        """
        first = False
        for key in keys:
            entry = self._keys.get(key)
            if entry is not None and entry.locked_until > entry.reported_until:
                entry.reported_until = entry.locked_until
                first = True
        return first

    def succeeded(self, key: str) -> None:
        self._keys.pop(key, None)

    def _forget_old(self, now: float) -> None:
        for key in [k for k, f in self._keys.items()
                    if f.locked_until <= now and now - f.last >= self.max_lockout]:
            del self._keys[key]
