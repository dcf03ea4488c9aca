"""Users, roles, passwords, login sessions and API tokens.

Passwords are hashed with argon2id. Tokens are 256 random bits shown once;
only their SHA-256 is stored, so a copy of the database opens no session.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from web.db import Token, User

from . import audit
from .errors import Conflict, FieldProblem, Invalid, NotFound, RateLimited

MIN_PASSWORD_LENGTH = 12
SESSION_LIFETIME = timedelta(hours=12)
TOKEN_PREFIX = "sbc_"


class Role(enum.StrEnum):
    """What a user may do; each role includes the ones below it."""

    ADMIN = "admin"
    """Everything: configuration, users, tokens."""
    OPERATOR = "operator"
    """Reads everything and runs runtime actions; changes no configuration."""
    VIEWER = "viewer"
    """Reads configuration, state and the audit log."""


RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


def role_allows(held: Role, needed: Role) -> bool:
    return RANK[held] >= RANK[needed]


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    # Verified against when the username is unknown, so a login for a missing
    # user costs as much time as one for a real user.
    return _hasher().hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        message = f"at least {MIN_PASSWORD_LENGTH} characters"
        raise Invalid([FieldProblem(("body", "password"), message, "password")])


# Users


def create_user(
    session: Session,
    *,
    actor: str,
    username: str,
    password: str,
    role: Role,
    now: datetime,
) -> User:
    _check_password(password)
    if _user(session, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=role.value,
        created_at=now,
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="create",
        kind="user",
        name=username,
        now=now,
        after={"role": role.value, "password_set": True},
    )
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def get_user(session: Session, username: str) -> User:
    user = _user(session, username)
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def update_user(
    session: Session,
    *,
    actor: str,
    username: str,
    now: datetime,
    password: str | None = None,
    role: Role | None = None,
) -> User:
    user = get_user(session, username)
    before = {"role": user.role}
    if role is not None and role != user.role:
        _keep_an_admin(session, user)
        user.role = role.value
    if password is not None:
        _check_password(password)
        user.password_hash = hash_password(password)
        # A new password ends every login session opened with the old one.
        _revoke(session, user, kind="session")
    after = {"role": user.role, "password_changed": password is not None}
    audit.record(
        session,
        actor=actor,
        action="update",
        kind="user",
        name=username,
        now=now,
        before=before,
        after=after,
    )
    return user


def delete_user(session: Session, *, actor: str, username: str, now: datetime) -> None:
    user = get_user(session, username)
    _keep_an_admin(session, user)
    session.delete(user)
    audit.record(
        session,
        actor=actor,
        action="delete",
        kind="user",
        name=username,
        now=now,
        before={"role": user.role},
    )


def _user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).first()


def _keep_an_admin(session: Session, user: User) -> None:
    if user.role != Role.ADMIN:
        return
    admins = session.scalar(select(func.count(User.id)).where(User.role == "admin"))
    if (admins or 0) <= 1:
        raise Conflict("the last admin cannot be removed or demoted")


# Login


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The user if the password matches; the same argon2 work either way."""
    user = _user(session, username)
    encoded = _dummy_hash() if user is None else user.password_hash
    try:
        _hasher().verify(encoded, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is not None and _hasher().check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


@dataclass
class LoginLimiter:
    """Failed logins allowed per key (username, client address) in a window.

    Sans-IO: the caller passes ``now`` (seconds, monotonic). Memory is bounded
    by forgetting keys whose window has passed.
    """

    max_failures: int = 5
    window: float = 300.0
    max_keys: int = 10_000
    _failures: dict[str, list[float]] = field(default_factory=dict)

    def check(self, keys: tuple[str, ...], now: float) -> None:
        """Raise :class:`RateLimited` if any key has used up its failures."""
        for key in keys:
            recent = self._recent(key, now)
            if len(recent) >= self.max_failures:
                retry_after = int(recent[0] + self.window - now) + 1
                raise RateLimited("too many failed logins", retry_after)

    def failed(self, keys: tuple[str, ...], now: float) -> None:
        if len(self._failures) >= self.max_keys:
            self._forget_old(now)
        for key in keys:
            self._failures.setdefault(key, []).append(now)
            del self._failures[key][: -self.max_failures]

    def succeeded(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, ()) if now - t < self.window]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def _forget_old(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        while len(self._failures) >= self.max_keys:
            self._failures.pop(next(iter(self._failures)))


# Tokens


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just created: ``secret`` is shown this once and never stored."""

    token: Token
    secret: str


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def issue_token(
    session: Session,
    user: User,
    *,
    kind: str,
    now: datetime,
    label: str = "",
    expires_at: datetime | None = None,
) -> IssuedToken:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = Token(
        user_id=user.id,
        kind=kind,
        label=label,
        token_hash=_digest(secret),
        created_at=now,
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    return IssuedToken(token, secret)


def purge_expired(session: Session, now: datetime) -> int:
    """Delete expired tokens (called at each login, so the table stays small)."""
    query = select(Token).where(Token.expires_at.is_not(None), Token.expires_at <= now)
    expired = list(session.scalars(query))
    for token in expired:
        session.delete(token)
    return len(expired)


def resolve_token(session: Session, secret: str, now: datetime) -> User | None:
    """The user a bearer token belongs to, if it is known and unexpired."""
    digest = _digest(secret)
    token = session.scalars(select(Token).where(Token.token_hash == digest)).first()
    # The lookup is by digest; comparing again in constant time costs nothing
    # and keeps the check independent of how the database compares bytes.
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        return None
    if token.expires_at is not None and _aware(token.expires_at) <= now:
        return None
    return session.get(User, token.user_id)


def revoke_token_secret(session: Session, secret: str) -> None:
    token = session.scalars(
        select(Token).where(Token.token_hash == _digest(secret))
    ).first()
    if token is not None:
        session.delete(token)


def list_tokens(session: Session, user: User) -> list[Token]:
    query = select(Token).where(Token.user_id == user.id, Token.kind == "api")
    return list(session.scalars(query.order_by(Token.id)))


def delete_token(session: Session, user: User, token_id: int, *, now: datetime) -> None:
    token = session.get(Token, token_id)
    if token is None or token.user_id != user.id or token.kind != "api":
        raise NotFound(f"no API token {token_id}")
    session.delete(token)
    audit.record(
        session,
        actor=user.username,
        action="delete",
        kind="api_token",
        name=str(token_id),
        now=now,
        before={"label": token.label},
    )


def _revoke(session: Session, user: User, *, kind: str) -> None:
    query = select(Token).where(Token.user_id == user.id, Token.kind == kind)
    for token in session.scalars(query):
        session.delete(token)


def _aware(moment: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
