"""Empties a test's program database on PostgreSQL: the program's tables, the schema
revision Alembic keeps (a database without tables but stamped at head would refuse nothing
and hold nothing), and the partner buckets' table."""

from __future__ import annotations


def drop_program_schema(url: str) -> None:
    from sqlmodel import SQLModel, create_engine

    import models.tables  # noqa: F401

    engine = create_engine(url)
    try:
        SQLModel.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "DROP TABLE IF EXISTS prakerja_schema_version, prakerja_partner_rate"
            )
    finally:
        engine.dispose()
