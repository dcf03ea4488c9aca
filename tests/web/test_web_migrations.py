"""Migrations from an empty database, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from web.db import MIGRATIONS, Base, make_engine, upgrade


def _head() -> str:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def test_upgrade_from_empty_creates_every_model_table(database_url):
    engine = make_engine(database_url)
    assert inspect(engine).get_table_names() == []
    upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    with engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version"))
        assert version.scalar_one() == _head()
    engine.dispose()


def test_upgrade_twice_is_a_no_op(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT count(*) FROM alembic_version"))
        assert rows.scalar_one() == 1
    engine.dispose()


def test_migrated_columns_match_the_models(database_url):
    # The hand-written migration and the declarative models must agree, or
    # the ORM would write columns the migrated database does not have.
    engine = make_engine(database_url)
    upgrade(engine)
    inspector = inspect(engine)
    for name, table in Base.metadata.tables.items():
        migrated = {column["name"] for column in inspector.get_columns(name)}
        assert migrated == {column.name for column in table.columns}, name
    engine.dispose()
