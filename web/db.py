"""Persistence: the admin plane's tables, engine and migrations.

Every configuration object is one row keyed by (kind, name, node): its
validated document as JSON with secrets masked, a revision that grows on each
change, and the reconciler's outcome (desired and applied revisions, state,
reason). ``node`` is empty for objects every node shares and names a node for
node-local ones, so several nodes share one PostgreSQL without schema rework.
Secrets live encrypted in their own table, one row per field.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    sessionmaker,
)

DATABASE_URL_ENV = "SBC_DATABASE_URL"
MIGRATIONS = Path(__file__).parent / "migrations"


class UtcDateTime(TypeDecorator[datetime]):
    """An instant, stored in UTC and read back with its zone.

    SQLite keeps no zone: without this, an instant given as +01:00 would be
    stored as its wall-clock time, and every value would read back naive.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # read as UTC, never as local
        return value.astimezone(UTC)

    def process_result_value(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class ConfigObject(Base):
    """One configuration object (a listener, a trunk, a dial plan)."""

    __tablename__ = "config_objects"
    __table_args__ = (UniqueConstraint("kind", "name", "node"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128))
    node: Mapped[str] = mapped_column(String(128), default="")
    """Empty: shared by every node; otherwise the one node it belongs to."""
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The validated model dump, every secret replaced by the mask."""
    revision: Mapped[int] = mapped_column(default=1)
    desired_revision: Mapped[int] = mapped_column(default=1)
    applied_revision: Mapped[int] = mapped_column(default=0)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    """``pending``, ``applied`` or ``failed`` (set by the reconciler)."""
    reason: Mapped[str] = mapped_column(String(1024), default="")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SecretValue(Base):
    """One secret field of a configuration object, sealed with AES-GCM."""

    __tablename__ = "secret_values"
    __table_args__ = (UniqueConstraint("object_id", "path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    object_id: Mapped[int] = mapped_column(
        ForeignKey("config_objects.id", ondelete="CASCADE")
    )
    path: Mapped[str] = mapped_column(String(256))
    """JSON path of the field in the document, dotted (``inbound.digest.password``)."""
    key_id: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    """argon2id encoded hash (salt and parameters included)."""
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Token(Base):
    """A login session or an API token; only its SHA-256 is kept."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    """``session`` (from login) or ``api`` (created by its owner)."""
    label: Mapped[str] = mapped_column(String(128), default="")
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_kind_name", "kind", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class CdrRow(Base):
    """One finished call (`sbc.cdr.CallRecord`), as the call engine wrote it.

    Times are Unix seconds, as in the JSON-lines file. Text that came off the
    wire (Call-IDs, numbers) is unbounded ``Text``: a record must never be
    refused for being long.
    """

    __tablename__ = "cdrs"
    __table_args__ = (
        Index("ix_cdrs_a_trunk_start", "a_trunk", "start_time"),
        Index("ix_cdrs_b_trunk_start", "b_trunk", "start_time"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True
    )
    node: Mapped[str] = mapped_column(String(128), default="")
    """The node whose call engine wrote the record (empty: a single node)."""
    call_id: Mapped[str] = mapped_column(Text, index=True)
    start_time: Mapped[float] = mapped_column(Double, index=True)
    answer_time: Mapped[float | None] = mapped_column(Double)
    end_time: Mapped[float] = mapped_column(Double)
    duration: Mapped[float] = mapped_column(Double)
    disposition: Mapped[str] = mapped_column(String(16), index=True)
    final_status: Mapped[int] = mapped_column(Integer)
    b_call_id: Mapped[str | None] = mapped_column(Text)
    a_trunk: Mapped[str | None] = mapped_column(Text)
    b_trunk: Mapped[str | None] = mapped_column(Text)
    calling_received: Mapped[str | None] = mapped_column(Text)
    calling_e164: Mapped[str | None] = mapped_column(Text, index=True)
    calling_sent: Mapped[str | None] = mapped_column(Text)
    called_received: Mapped[str | None] = mapped_column(Text)
    called_e164: Mapped[str | None] = mapped_column(Text, index=True)
    called_sent: Mapped[str | None] = mapped_column(Text)
    hangup_side: Mapped[str | None] = mapped_column(String(16))
    end_reason: Mapped[str | None] = mapped_column(Text)
    media: Mapped[dict[str, Any]] = mapped_column(JSON)
    ipsec: Mapped[dict[str, Any]] = mapped_column(JSON)
    ike_sa: Mapped[str | None] = mapped_column(Text)
    """The IKE_SA that protected the call's trunk (its SPIs), if any."""
    child_sa: Mapped[str | None] = mapped_column(Text)
    """The CHILD_SA (SPIs) that carried the call's signalling, if any."""
    algorithms: Mapped[str | None] = mapped_column(Text)
    """The negotiated algorithms of that CHILD_SA (strongSwan keywords)."""


def database_url(data_dir: Path, url: str | None = None) -> str:
    """``url``, else SBC_DATABASE_URL, else a SQLite file in ``data_dir``."""
    chosen = url or os.environ.get(DATABASE_URL_ENV)
    if chosen:
        return chosen
    return f"sqlite:///{(data_dir / 'sbc.db').resolve()}"


CONNECT_TIMEOUT = 10
"""Seconds a PostgreSQL connection attempt may take: a database host that
drops packets must fail the health check and the CDR commit, not hang them."""


def make_engine(url: str) -> Engine:
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        _sqlite_foreign_keys(engine)
    return engine


def _sqlite_foreign_keys(engine: Engine) -> None:
    # SQLite ignores ON DELETE CASCADE unless each connection turns it on.
    @event.listens_for(engine, "connect")
    def _on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the migrations in the package."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
