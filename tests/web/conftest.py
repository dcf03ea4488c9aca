"""Fixtures of the admin-plane tests: every test runs on SQLite and PostgreSQL.

PostgreSQL: one private database per test session (named after the pid, so
two xdist workers never share it), dropped at the end; each test gets its
own empty schema in it, so migrations always start from nothing.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pg_admin import PG_SERVER, pg_admin_connect

from web.app import AdminState, create_app
from web.crypto import load_or_create_key_file
from web.db import make_engine, make_sessions, upgrade
from web.services import users
from web.services.users import Role

PASSWORDS = {role: f"{role.value}-password-long" for role in Role}


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite"
        return
    name = f"sbc_web_test_{os.getpid()}"
    with pg_admin_connect() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with pg_admin_connect() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_schemas = itertools.count(1)


@pytest.fixture
def new_database_url(backend: str, tmp_path: Path) -> Callable[[], str]:
    """A factory of URLs of empty databases (SQLite file or PostgreSQL schema)."""

    def make() -> str:
        number = next(_schemas)
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'db{number}.sqlite'}"
        schema = f"t{number}"
        import psycopg

        dbname = backend.rsplit("/", 1)[1]
        with psycopg.connect(
            f"host=127.0.0.1 user=postgres dbname={dbname}", autocommit=True
        ) as connection:
            connection.execute(f"CREATE SCHEMA {schema}")
        return f"{backend}?options=-csearch_path%3D{schema}"

    return make


@pytest.fixture
def database_url(new_database_url: Callable[[], str]) -> str:
    return new_database_url()


@pytest.fixture
def state(database_url: str, tmp_path: Path) -> Iterator[AdminState]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield AdminState(make_sessions(engine), load_or_create_key_file(tmp_path))
    engine.dispose()


@pytest.fixture
def client(state: AdminState) -> Iterator[TestClient]:
    with TestClient(create_app(state)) as test_client:
        yield test_client


@pytest.fixture
def role_headers(state: AdminState) -> dict[Role, dict[str, str]]:
    """A bearer header of one user of each role, created through the services."""
    headers = {}
    now = datetime.now(UTC)
    with state.sessions.begin() as session:
        for role in Role:
            user = users.create_user(
                session,
                actor="test",
                username=role.value,
                password=PASSWORDS[role],
                role=role,
                now=now,
            )
            issued = users.issue_token(session, user, kind="api", now=now)
            headers[role] = {"Authorization": f"Bearer {issued.secret}"}
    return headers


@pytest.fixture
def passwords() -> dict[Role, str]:
    """The password of each user ``role_headers`` creates."""
    return dict(PASSWORDS)
