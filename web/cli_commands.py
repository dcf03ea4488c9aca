"""Functions behind the admin-plane CLI commands (wired in by ``sbc.cli``).

``sbc db upgrade``        -> :func:`db_upgrade`
``sbc user add``          -> :func:`user_add`
``sbc config apply FILE`` -> :func:`config_apply`
``sbc config export``     -> :func:`config_export`
At first start, :func:`bootstrap_admin` creates the first admin with a
one-time password when no user exists yet (there are no default credentials).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from sbc.config import dump_config, load_config
from web.app import AdminState
from web.crypto import load_or_create_key_file
from web.db import User, database_url, make_engine, make_sessions, upgrade
from web.services import config, users
from web.services.users import Role

CLI_ACTOR = "cli"
"""Audit actor of changes made from the command line."""


def open_admin(data_dir: Path, url: str | None = None) -> AdminState:
    """Migrate the database and load the key file: what the API app needs."""
    engine = make_engine(database_url(data_dir, url))
    upgrade(engine)
    return AdminState(make_sessions(engine), load_or_create_key_file(data_dir))


def db_upgrade(data_dir: Path, url: str | None = None) -> str:
    """Apply every pending migration; returns the database URL without password."""
    chosen = database_url(data_dir, url)
    engine = make_engine(chosen)
    upgrade(engine)
    return engine.url.render_as_string(hide_password=True)


def user_add(
    data_dir: Path,
    username: str,
    role: Role,
    password: str | None = None,
    url: str | None = None,
) -> str | None:
    """Create a user; without ``password`` one is generated and returned once."""
    state = open_admin(data_dir, url)
    generated = None if password is not None else secrets.token_urlsafe(18)
    with state.sessions.begin() as session:
        users.create_user(
            session,
            actor=CLI_ACTOR,
            username=username,
            password=password or generated or "",
            role=role,
            now=datetime.now(UTC),
        )
    return generated


def bootstrap_admin(state: AdminState) -> str | None:
    """If there is no user at all, create ``admin`` and return its one-time
    password for the caller to print once; None when users exist."""
    with state.sessions.begin() as session:
        if session.scalar(select(func.count(User.id))):
            return None
        password = secrets.token_urlsafe(18)
        users.create_user(
            session,
            actor=CLI_ACTOR,
            username="admin",
            password=password,
            role=Role.ADMIN,
            now=datetime.now(UTC),
        )
        return password


def config_apply(
    data_dir: Path, file: Path, url: str | None = None, actor: str = CLI_ACTOR
) -> dict[str, int]:
    """Check ``file`` as ``sbc config check`` does, then make the stored
    configuration equal to it, auditing each change. Raises
    :class:`sbc.config.ConfigError` or :class:`web.services.errors.Invalid`."""
    wanted = load_config(file)
    state = open_admin(data_dir, url)
    with state.sessions.begin() as session:
        return config.apply_config(
            session, state.box, wanted, actor=actor, now=datetime.now(UTC)
        )


def config_export(
    data_dir: Path, reveal_secrets: bool = False, url: str | None = None
) -> str:
    """The stored configuration as YAML; secrets masked unless asked for."""
    state = open_admin(data_dir, url)
    with state.sessions.begin() as session:
        stored = config.load_config(session, state.box)
    return dump_config(stored, reveal_secrets=reveal_secrets)
