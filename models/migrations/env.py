"""Alembic's environment: the program's metadata, and the connection models/schema.py holds.

Run by models/schema.py (with a connection that already holds the migration lock) and by
`python -m models.migrations` (which opens PRAKERJA_DATABASE_URL itself)."""

from alembic import context
from sqlmodel import SQLModel

import models.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from models.schema import VERSION_TABLE, include_object

config = context.config


def render_item(type_, obj, autogen_context):
    """A new revision spells SQLModel's strings as plain sa.String (VARCHAR either way)."""
    from sqlmodel.sql.sqltypes import AutoString

    if type_ == "type" and isinstance(obj, AutoString):
        return "sa.String()"
    return False


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        include_object=include_object,
        version_table=VERSION_TABLE,
        compare_type=True,
        render_item=render_item,
        # SQLite alters a table by copying it (ALTER TABLE does little there).
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
elif context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=SQLModel.metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    from models.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            run_migrations(conn)
            conn.commit()
    finally:
        engine.dispose()
