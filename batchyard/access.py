"""Who may do what through ``batchyard serve``: tokens with a role and an owner, and the
dashboard's sessions. A token's secret is shown once, when it is made; the store keeps only
its SHA-256 (a secret of 128 random bits needs no slow hash), so a copy of the database
gives no way in.

Roles rank ``viewer < operator < admin``: a viewer reads, an operator also submits and
controls batches, an admin also manages tokens and sees every owner's batches. A token's
owner (its name unless given) is what its batches record: tokens sharing an owner share
their batches (a team's read-only dashboard token beside its operator token)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from batchyard.errors import ConfigError

if TYPE_CHECKING:
    from batchyard.clock import Clock
    from batchyard.store.base import Store

#: How long a dashboard session lasts after logging in.
SESSION_TTL = 7 * 24 * 3600.0
#: A token's last use is written at most this often (a request must not be a write).
TOUCH_EVERY = 60.0
#: The longest token name (an owner is one too).
MAX_NAME = 64
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.@-]{{0,{MAX_NAME - 1}}}")


class Role(StrEnum):
    """What a token may do; each role may do everything the ones before it may."""

    #: Reads batches, items, reports and streams.
    VIEWER = "viewer"
    #: Also submits batches and controls them (pause, resume, cancel, retry, delete).
    OPERATOR = "operator"
    #: Also sees and controls every owner's batches and manages tokens.
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


@dataclass(frozen=True, slots=True)
class Token:
    """A token as the store keeps it (never its secret)."""

    name: str
    owner: str
    role: Role
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "owner": self.owner,
            "role": self.role.value,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True, slots=True)
class Session:
    """A dashboard login: the token it was made with and the CSRF token its unsafe
    requests carry."""

    token: Token
    csrf: str
    expires_at: float


def digest(secret: str) -> str:
    """What the store keeps of a token or session secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def check_name(name: str, what: str = "token name") -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r} is not usable: 1-{MAX_NAME} letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


class Tokens:
    """The tokens and sessions of a store (``yard.tokens``)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def create(self, name: str, role: Role | str, owner: str | None = None) -> tuple[Token, str]:
        """A new token and its secret (shown once: only its digest is kept). Raises
        ConfigError for a bad name or role, Conflict when the name is taken."""
        role = _role(role)
        check_name(name)
        owner = check_name(owner, "owner") if owner is not None else name
        secret = f"by_{role.value}_{secrets.token_hex(16)}"
        token = Token(name, owner, role, self._clock.now())
        return self._store.add_token(token, digest(secret)), secret

    def list(self) -> list[Token]:
        return self._store.list_tokens()

    def revoke(self, name: str) -> Token:
        """Revoke a token and end its sessions; raises ConfigError when there is none."""
        return self._store.revoke_token(name, self._clock.now())

    def authenticate(self, secret: str) -> Token | None:
        """The live token whose secret this is, or None."""
        now = self._clock.now()
        token = self._store.token_by_digest(digest(secret))
        if token is None or token.is_revoked:
            return None
        if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
            self._store.touch_token(token.name, now)
        return token

    def open_session(self, token: Token) -> tuple[str, Session]:
        """A new session for ``token``: its secret (the cookie's value) and itself."""
        now = self._clock.now()
        secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        session = Session(token, csrf, now + SESSION_TTL)
        self._store.add_session(digest(secret), session, now)
        return secret, session

    def session(self, secret: str) -> Session | None:
        """The live session of this cookie value (its token not revoked), or None."""
        return self._store.session_by_digest(digest(secret), self._clock.now())

    def close_session(self, secret: str) -> None:
        self._store.drop_session(digest(secret))


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise ConfigError(
            f"role {role!r} is not one of {', '.join(r.value for r in Role)}"
        ) from None
