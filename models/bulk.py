"""Bulk writes on the hot paths: one driver-level executemany (or COPY) per batch.

SQLAlchemy's per-row parameter processing costs more than SQLite's own work at a few
million rows, so these helpers hand the driver plain tuples. Values are converted the
way SQLAlchemy stores them, so rows written here read back like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, DateTime, Table
from sqlalchemy.engine import Connection


def _sqlite_value(value: Any) -> Any:
    # SQLAlchemy's SQLite DATETIME/DATE storage formats (always 6 microsecond digits),
    # so that text comparisons in SQL order instants correctly.
    if isinstance(value, datetime):
        return (
            f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}."
            f"{value.microsecond:06d}"
        )
    if isinstance(value, date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    return value


def _is_sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def insert_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    prepared: bool = False,
) -> None:
    """Inserts tuples (in `columns` order): executemany on SQLite, COPY on PostgreSQL.

    `prepared` rows already hold dates and datetimes as their stored text.
    """
    cols = ", ".join(columns)
    if _is_sqlite(conn):
        marks = ", ".join("?" for _ in columns)
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({cols}) VALUES ({marks})",
            rows if prepared else [tuple(_sqlite_value(v) for v in row) for row in rows],
        )
        return
    raw = conn.connection.driver_connection
    if raw is None:  # only a closed connection has none
        raise RuntimeError("the database connection is closed")
    with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({cols}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def update_rows(
    conn: Connection,
    table: Table,
    set_columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    key: str = "id",
    expect: tuple[str, str] | None = None,
) -> None:
    """UPDATE table SET set_columns WHERE key = ? [AND expect_col = expect_value].

    Each row is (*values_in_set_columns_order, key_value).
    """
    if not rows:
        return
    sqlite = _is_sqlite(conn)
    mark = "?" if sqlite else "%s"
    sets = ", ".join(f"{c} = {mark}" for c in set_columns)
    sql = f"UPDATE {table.name} SET {sets} WHERE {key} = {mark}"
    params: list[tuple] = [tuple(r) for r in rows]
    if expect is not None:
        sql += f" AND {expect[0]} = {mark}"
        params = [(*r, expect[1]) for r in params]
    if sqlite:
        # Only date/datetime columns need converting; the rest go through as they are.
        timed = [
            i for i, c in enumerate(set_columns) if isinstance(table.c[c].type, (DateTime, Date))
        ]
        if timed:
            params = [_convert(r, timed) for r in params]
    conn.exec_driver_sql(sql, params)


def _convert(row: tuple, indexes: list[int]) -> tuple:
    values = list(row)
    for i in indexes:
        values[i] = _sqlite_value(values[i])
    return tuple(values)
