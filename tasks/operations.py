"""Reads the scheduled operations need: the draw's public facts, waves to credit tonight.

Plain functions of a session (tests call them directly) and thin task wrappers. They
return numbers, hashes and ids, never people.
"""

from __future__ import annotations

import json
from datetime import datetime

from prefect.cache_policies import NO_CACHE
from sqlalchemy import func, select
from sqlmodel import Session

from models.enums import State, WaveStatus
from models.tables import Wave
from tasks.boundary import task
from tasks.common import R, load_wave
from tasks.runtime import get_runtime
from tasks.signoff import credits_allowed


def draw_facts(session: Session, wave_id: int) -> dict:
    """What anyone needs to recompute the draw: the seed's SHA-256 (published before the
    draw), and after it the seed, the pool's size and digest and the seats."""
    wave = load_wave(session, wave_id)
    drawn_at = wave.drawn_at
    drawn = drawn_at is not None
    stored = json.loads(wave.seats_json or "{}")
    seats = stored.get("seats") if wave.allocation == "provincial" else wave.quota
    return {
        "wave_id": wave_id,
        "lottery_seed_sha256": wave.lottery_seed_sha256,
        "drawn": drawn,
        "drawn_at": drawn_at.isoformat() + "Z" if drawn_at is not None else None,
        "lottery_seed": wave.lottery_seed if drawn else None,
        "pool_size": wave.pool_size if drawn else None,
        "pool_digest": wave.pool_digest if drawn else None,
        "quota": wave.quota,
        "allocation": wave.allocation,
        "seats": seats if drawn else None,
        "pool_by_province": stored.get("pool_counts") if drawn else None,
        "without_pending": wave.draw_without_pending,
    }


def wave_ids(session: Session) -> list[int]:
    W = Wave.__table__  # type: ignore[attr-defined]
    return list(session.execute(select(W.c.wave_id).order_by(W.c.wave_id)).scalars())


def waves_to_credit(session: Session) -> list[dict]:
    """Open waves with confirmed participants not yet credited and nothing (sign-off)
    holding their money back, lowest first."""
    counts = dict(
        session.execute(
            select(R.c.wave_id, func.count())
            .where(R.c.state == State.CONFIRMED.value)
            .group_by(R.c.wave_id)
        ).all()
    )
    out = []
    for wave_id in sorted(counts):
        wave = session.get(Wave, wave_id)
        if wave is None or wave.status == WaveStatus.CLOSED:
            continue
        if not credits_allowed(session, wave):
            continue  # waits for sign-off (wave-rules.md): credited once approved
        out.append(
            {
                "wave_id": wave_id,
                "confirmed": int(counts[wave_id]),
                "rollout_deadline": wave.rollout_deadline,
                "keep_open": wave.keep_open,
            }
        )
    return out


def confirmed_count(session: Session, wave_id: int) -> int:
    return session.execute(
        select(func.count()).where(R.c.wave_id == wave_id, R.c.state == State.CONFIRMED.value)
    ).scalar_one()


def rollout_deadline(session: Session, wave_id: int) -> datetime:
    return load_wave(session, wave_id).rollout_deadline


@task(name="draw-facts", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def draw_facts_task(wave_id: int) -> dict:
    with get_runtime().sessions() as session:
        return draw_facts(session, wave_id)
