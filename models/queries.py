"""The few helpers every layer above reads the tables with: the registrant table, a wave
by number, and the clock the program stores (naive UTC)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlmodel import Session

from models.tables import Registrant, Wave

R = Registrant.__table__  # type: ignore[attr-defined]


class not_indexed(ColumnElement):  # noqa: N801 - used like a column function
    """A column whose condition must not choose an index (SQLite's unary `+`, a no-op on
    the value); the column itself elsewhere."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: Any) -> None:
        self.column = column
        self.type = column.type


@compiles(not_indexed)
def _column_itself(element: not_indexed, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(not_indexed, "sqlite")
def _column_not_indexed(element: not_indexed, compiler: Any, **kw: Any) -> str:
    return "+" + compiler.process(element.column, **kw)


def in_id_range(wave_id: int, states: list[str], lo: int, hi: int) -> list:
    """The conditions of a batch: the wave's rows in `states` with ids lo..hi, read by the
    primary key's range.

    On SQLite, a condition on `state` alone would choose ix_registrant_wave_state_reason,
    whose entries for one state are ordered by reason before id: the id range cannot
    narrow that index, so each batch would walk every entry of the state (0.3-0.5 s per
    batch at six million rows, a quadratic stage: the regression of issue 19). Read by
    the id range, a batch costs its own rows: 5 ms. PostgreSQL's planner takes the
    primary key's range by its own estimates (tests/scale/test_query_plans.py).
    """
    return [
        not_indexed(R.c.wave_id) == wave_id,
        not_indexed(R.c.state).in_(states),
        R.c.id >= lo,
        R.c.id <= hi,
    ]


def utcnow() -> datetime:
    """Naive UTC: both SQLite and PostgreSQL store it the same way."""
    return datetime.now(UTC).replace(tzinfo=None)


def load_wave(session: Session, wave_id: int) -> Wave:
    wave = session.get(Wave, wave_id)
    if wave is None:
        raise LookupError(f"wave {wave_id} does not exist")
    return wave
