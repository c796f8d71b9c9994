"""Reads the scheduled operations need: the draw's public facts, waves to credit tonight.

Plain functions of a session (tests call them directly) and thin task wrappers. They
return numbers, hashes and ids, never people.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from pathlib import Path

from prefect.cache_policies import NO_CACHE
from sqlalchemy import func, select
from sqlmodel import Session

from models.enums import State, WaveStatus
from models.tables import Wave
from rules.signature import Approvers
from runtime.app import current
from runtime.boundary import task
from tasks import drop
from tasks.common import R, load_wave
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


def waves_to_credit(session: Session, approvers: Approvers | None) -> list[dict]:
    """Open waves with confirmed participants not yet credited and nothing (sign-off,
    checked with the approvers file `approvers`) holding their money back, lowest first."""
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
        if not credits_allowed(session, wave, approvers):
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


@task(name="rollout-facts", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def rollout_facts_task(wave_id: int) -> dict:
    """What the overnight rollout paces to: the wave's deadline and who is to credit."""
    with current().sessions() as session:
        return {
            "deadline": rollout_deadline(session, wave_id),
            "confirmed": confirmed_count(session, wave_id),
        }


@task(name="draw-facts", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def draw_facts_task(wave_id: int) -> dict:
    with current().sessions() as session:
        return draw_facts(session, wave_id)


# ---------------------------------------------------------------- the operation flows' tasks
@task(name="find-due-wave", cache_policy=NO_CACHE)  # answers from the database
def find_due_wave_task(folder: str) -> dict:
    """The drop folder's due wave (tasks/drop.py): its number, export and settings file."""
    with current().sessions() as session:
        existing = wave_ids(session)
    due = drop.due_wave(Path(folder), existing)
    return {
        "existing_max": max(existing) if existing else 0,
        "exports_seen": len(drop.exports_in(Path(folder))),
        "wave_id": due.wave_id if due else None,
        "export": str(due.export.resolve()) if due else None,
        "settings_file": str(due.settings_file) if due else None,
    }


@task(name="create-wave", cache_policy=NO_CACHE)  # answers from the database
def create_wave_task(wave_id: int, export: str, settings_file: str) -> dict:
    """Creates the wave from the drop folder's settings with a fresh lottery seed."""
    from rules.intake import HeaderError, MissingColumnsError
    from rules.settings import SettingsError, WaveSettings, jakarta_today
    from tasks.intake import check_header, file_sha256
    from tasks.waves import create_or_resume_wave

    values = drop.read_wave_settings(Path(settings_file))
    try:
        check_header(export)
    except (MissingColumnsError, HeaderError) as exc:
        raise SettingsError(f"{Path(export).name}: {exc}") from None
    settings = WaveSettings(
        wave_id=wave_id,
        lottery_seed=secrets.token_hex(16),
        reference_date=values.pop("reference_date", None) or jakarta_today(),
        **values,
    )
    wave, created = create_or_resume_wave(
        current().sessions,
        settings,
        source_path=export,
        source_sha256=file_sha256(export),
        given=set(values) | {"lottery_seed"},
        actor=actor_here(),  # wave.created, with the wave
    )
    return {"wave_id": wave_id, "created": created, "quota": wave.quota}


@task(name="waves-to-credit", cache_policy=NO_CACHE)  # answers from the database
def waves_to_credit_task() -> list[dict]:
    with current().sessions() as session:
        return waves_to_credit(session, current().approvers)


@task(name="raise-quota", cache_policy=NO_CACHE)  # answers from the database
def raise_quota_task(wave_id: int, quota: int, lease_owner: str, who: str, host: str) -> dict:
    """Changes the wave only while it is open and this run's lease holds it."""
    from tasks.audit import Actor
    from tasks.draw import raise_quota

    return raise_quota(
        current().sessions, wave_id, quota, lease_owner=lease_owner, actor=Actor(who, host)
    )


@task(name="record-sign-off", cache_policy=NO_CACHE)  # answers from the database
def record_sign_off_task(
    wave_id: int, approver: str, seen_digest: str, signature: str, run_name: str
) -> dict:
    """One approval from the form, recorded exactly like `prakerja wave sign-off`: its
    signature checked against the approver's key from the approvers file first;
    `{"refused": why}` instead of an approval the rules refuse."""
    from tasks.audit import Actor
    from tasks.signoff import SignOffError, record_approval

    app = current()
    try:
        result = record_approval(
            app.sessions,
            wave_id,
            Actor(approver.strip(), f"prefect-ui (run {run_name})"),
            via="prefect",
            seen_digest=seen_digest,
            approvers=app.approvers,
            signature=signature.strip() or None,
        )
    except SignOffError as exc:
        return {"refused": str(exc)}
    return {k: result[k] for k in ("required", "approvals", "approved")}


@task(name="audit", cache_policy=NO_CACHE)
def audit_task(action: str, wave_id: int, after: dict) -> int:
    """An audit row for this deployment run (who: the deployment and run names)."""
    from tasks import audit

    return audit.record(current().sessions, actor_here(), action, wave_id=wave_id, after=after)


def actor_here():
    from tasks.audit import Actor

    return Actor.deployment()
