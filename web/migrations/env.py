"""Alembic environment: runs on the connection :func:`web.db.upgrade` passes."""

from __future__ import annotations

from alembic import context

from web.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
