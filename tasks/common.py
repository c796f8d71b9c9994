"""Shared glue for batch tasks: paging by id, bulk updates, pending marks, the clock."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import select
from sqlalchemy.schema import CreateIndex, DropIndex
from sqlmodel import Session

from models.bulk import update_rows
from models.queries import R, in_id_range, load_wave, utcnow

__all__ = ["R", "load_wave", "plan_batches", "utcnow"]


def plan_batches(
    session: Session, wave_id: int, states: Sequence[str], batch_size: int
) -> list[tuple[int, int]]:
    """Splits the ids of a wave's registrants in `states` into (first, last) id ranges."""
    ids = session.execute(
        select(R.c.id)
        .where(R.c.wave_id == wave_id, R.c.state.in_(list(states)))
        .order_by(R.c.id)
        .execution_options(yield_per=50_000)
    ).scalars()
    ranges: list[tuple[int, int]] = []
    first = last = None
    count = 0
    for rid in ids:
        if first is None:
            first = rid
        last = rid
        count += 1
        if count == batch_size:
            ranges.append((first, last))
            first, count = None, 0
    if first is not None and last is not None:
        ranges.append((first, last))
    return ranges


def rows_in_range(
    session: Session, wave_id: int, states: Sequence[str], id_range: tuple[int, int], columns
) -> list[Any]:
    lo, hi = id_range
    return list(
        session.execute(
            select(*columns).where(*in_id_range(wave_id, list(states), lo, hi)).order_by(R.c.id)
        )
    )


def bulk_update(
    session: Session,
    changes: Iterable[dict[str, Any]],
    *,
    expect_state: Sequence[str] | None = None,
    table=R,
    state_col: str = "state",
) -> None:
    """Applies one driver-level executemany UPDATE per distinct set of columns.

    Each dict has `_id` and the new column values. With `expect_state` (one state), a
    row that has moved on meanwhile is left alone (a batch never overwrites another's
    work).
    """
    expect = None
    if expect_state is not None:
        if len(expect_state) != 1:
            raise ValueError("expect_state takes exactly one state")
        expect = (state_col, str(expect_state[0]))
    by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for change in changes:
        shape = tuple(sorted(k for k in change if k != "_id"))
        by_shape.setdefault(shape, []).append(change)
    conn = session.connection()
    for shape, rows in by_shape.items():
        # In id order (a stable sort: one row's later change still comes last): the draw
        # decides in draw order, random over the table, and 232,000 updates in that order
        # touch a random page each; in id order, neighbours share their pages.
        rows.sort(key=lambda row: row["_id"])
        values = [(*(_plain(row[c]) for c in shape), row["_id"]) for row in rows]
        update_rows(conn, table, shape, values, expect=expect)


def _plain(value: Any) -> Any:
    # Enums are str subclasses the drivers would store by name on some paths.
    return value.value if isinstance(value, Enum) else value


def pending_change(rid: int, stage: str, partner: str, error: str, now: datetime) -> dict:
    return {
        "_id": rid,
        "pending_stage": stage,
        "pending_partner": partner,
        "pending_error": error[:500],
        "pending_at": now,
    }


CLEAR_PENDING = {
    "pending_stage": None,
    "pending_partner": None,
    "pending_error": None,
    "pending_at": None,
}


WAITLIST_INDEX = "ix_registrant_waitlist"


@contextmanager
def rebuilt_waitlist_index(session: Session) -> Iterator[None]:
    """Around an UPDATE that moves a whole waitlist in or out (the draw, the close): on
    SQLite the waitlist's index is dropped first and built again after, in the same
    transaction, by one sort, instead of 1.7 million entries inserted or deleted at random
    places one by one. PostgreSQL keeps it as it is: dropping an index there would lock
    the table against the dashboard's reads until the transaction ends."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        yield
        return
    index = next(i for i in R.indexes if i.name == WAITLIST_INDEX)
    # IF (NOT) EXISTS in the statements themselves, under the write lock: another wave's
    # draw or close may have just done the same.
    conn.execute(DropIndex(index, if_exists=True))
    yield
    conn.execute(CreateIndex(index, if_not_exists=True))
