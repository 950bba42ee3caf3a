"""Session tokens for the simulator: JWT-shaped, opaque to the server, expiring.

The real gateway issues a JWT valid for 24 hours [reference 3]. Ours look like one (three base64url
parts whose middle part carries `sub`, `iat`, `exp` and `jti`, so a client that reads `exp` to plan
its refresh works), but the server never verifies a signature: a token is valid when it is in the
store, not revoked, and not past its expiry. Re-login does not invalidate older tokens; logout
revokes the token it was called with; `Auth/validate` issues a new token and leaves the old one
valid until it expires.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

DEFAULT_TOKEN_LIFETIME = timedelta(hours=24)


class TokenState(Enum):
    VALID = "valid"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass
class _Session:
    username: str
    issued_at: float
    expires_at: float
    revoked: bool = False


@dataclass(frozen=True)
class TokenCheck:
    state: TokenState
    username: str | None = None

    @property
    def valid(self) -> bool:
        return self.state is TokenState.VALID


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class TokenStore:
    """Thread-safe token issue/check/revoke with a configurable lifetime."""

    def __init__(
        self,
        lifetime: timedelta | float = DEFAULT_TOKEN_LIFETIME,
        *,
        time_source: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._time = time_source
        self.lifetime = lifetime

    @property
    def lifetime(self) -> timedelta:
        return timedelta(seconds=self._lifetime_seconds)

    @lifetime.setter
    def lifetime(self, value: timedelta | float) -> None:
        """Applies to tokens issued from now on."""
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
        if seconds <= 0:
            raise ValueError("a token lifetime must be positive")
        self._lifetime_seconds = seconds

    def issue(self, username: str) -> str:
        now = self._time()
        expires_at = now + self._lifetime_seconds
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {
            "sub": username,
            "iat": int(now),
            "exp": int(expires_at),
            "jti": str(uuid.uuid4()),
        }
        token = ".".join(
            (
                _b64url(json.dumps(header, separators=(",", ":")).encode()),
                _b64url(json.dumps(claims, separators=(",", ":")).encode()),
                _b64url(secrets.token_bytes(32)),
            )
        )
        with self._lock:
            self._sessions[token] = _Session(username, issued_at=now, expires_at=expires_at)
        return token

    def check(self, token: str | None) -> TokenCheck:
        if not token:
            return TokenCheck(TokenState.UNKNOWN)
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return TokenCheck(TokenState.UNKNOWN)
            if session.revoked:
                return TokenCheck(TokenState.REVOKED, session.username)
            if self._time() >= session.expires_at:
                return TokenCheck(TokenState.EXPIRED, session.username)
            return TokenCheck(TokenState.VALID, session.username)

    def revoke(self, token: str) -> bool:
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return False
            session.revoked = True
            return True

    def expire(self, token: str | None = None) -> int:
        """Make one token (or every token) expired now; returns how many were expired."""
        now = self._time()
        with self._lock:
            if token is None:
                sessions = list(self._sessions.values())
            else:
                sessions = [self._sessions[token]] if token in self._sessions else []
            for session in sessions:
                session.expires_at = min(session.expires_at, now)
            return len(sessions)

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
