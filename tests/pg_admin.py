"""The test PostgreSQL server (127.0.0.1:5432, trust auth): its URL and an
administrative connection, or a skip when it cannot be reached."""

from __future__ import annotations

from typing import Any

import pytest

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def pg_admin_connect() -> Any:
    """An autocommit connection to the ``test`` database, for CREATE and DROP."""
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test",
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 unreachable: {exc}")
