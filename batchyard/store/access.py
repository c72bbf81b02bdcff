"""Tokens and sessions: the store's half of ``batchyard.access`` (digests only, never a
secret)."""

from __future__ import annotations

from batchyard.access import Role, Session, Token
from batchyard.errors import ConfigError, TokenExists
from batchyard.store.sqlbase import SqlBase

_TOKEN = "name, owner, role, created_at, last_used_at, revoked_at"


def _token(row: tuple[object, ...]) -> Token:
    name, owner, role, created, used, revoked = row
    return Token(
        name=str(name),
        owner=str(owner),
        role=Role(str(role)),
        created_at=float(str(created)),
        last_used_at=None if used is None else float(str(used)),
        revoked_at=None if revoked is None else float(str(revoked)),
    )


class AccessTables(SqlBase):
    """Tokens (a name, an owner, a role, the digest of the secret) and sessions."""

    def add_token(self, token: Token, digest: str) -> Token:
        with self._write() as tx:
            added = tx.all(
                "INSERT INTO tokens (name, owner, role, hash, created_at) VALUES (?, ?, ?, ?, ?) "
                f"ON CONFLICT (name) DO NOTHING RETURNING {_TOKEN}",
                (token.name, token.owner, token.role.value, digest, token.created_at),
            )
        if not added:
            raise TokenExists(token.name)
        return _token(added[0])

    def list_tokens(self) -> list[Token]:
        return [_token(row) for row in self._read(f"SELECT {_TOKEN} FROM tokens ORDER BY name")]

    def token_by_digest(self, digest: str) -> Token | None:
        rows = self._read(f"SELECT {_TOKEN} FROM tokens WHERE hash = ?", (digest,))
        return _token(rows[0]) if rows else None

    def touch_token(self, name: str, now: float) -> None:
        with self._write() as tx:
            tx.run("UPDATE tokens SET last_used_at = ? WHERE name = ?", (now, name))

    def revoke_token(self, name: str, now: float) -> Token:
        with self._write() as tx:
            rows = tx.all(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE name = ? "
                f"RETURNING {_TOKEN}",
                (now, name),
            )
            if not rows:
                raise ConfigError(f"no token is named {name!r} (batchyard token list)")
            tx.run("DELETE FROM sessions WHERE token_name = ?", (name,))
        return _token(rows[0])

    def add_session(self, digest: str, session: Session, now: float) -> None:
        with self._write() as tx:
            tx.run("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            tx.run(
                "INSERT INTO sessions (hash, token_name, csrf, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (digest, session.token.name, session.csrf, now, session.expires_at),
            )

    def session_by_digest(self, digest: str, now: float) -> Session | None:
        rows = self._read(
            f"SELECT s.csrf, s.expires_at, {', '.join('t.' + c for c in _TOKEN.split(', '))} "
            "FROM sessions s JOIN tokens t ON t.name = s.token_name "
            "WHERE s.hash = ? AND s.expires_at > ? AND t.revoked_at IS NULL",
            (digest, now),
        )
        if not rows:
            return None
        csrf, expires, *token = rows[0]
        return Session(_token(tuple(token)), str(csrf), float(expires))

    def drop_session(self, digest: str) -> None:
        with self._write() as tx:
            tx.run("DELETE FROM sessions WHERE hash = ?", (digest,))
