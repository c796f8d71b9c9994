"""Small builders of waves and export files for database-level tests."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

from rules.intake import REQUIRED_COLUMNS
from rules.settings import WaveSettings
from tasks.waves import create_or_resume_wave


def make_wave(sessions, wave_id: int = 1, **overrides):
    settings = WaveSettings(
        wave_id=wave_id,
        quota=overrides.pop("quota", 10),
        lottery_seed=overrides.pop("lottery_seed", "seed"),
        reference_date=overrides.pop("reference_date", date(2026, 11, 28)),
        **overrides,
    )
    wave, _ = create_or_resume_wave(
        sessions, settings, source_path=None, source_sha256=None, given=set()
    )
    return wave


def nik_for(
    i: int, *, female: bool = False, birth: date = date(1990, 1, 1), province: str = "31"
) -> str:
    day = birth.day + (40 if female else 0)
    return f"{province}7101{day:02d}{birth.month:02d}{birth.year % 100:02d}{i:04d}"


def person(i: int, **overrides) -> dict[str, str]:
    birth = overrides.pop("birth", date(1990, 1, 1))
    female = overrides.pop("female", False)
    province = overrides.pop("province", "31")
    row = {
        "registration_id": f"reg-{i}",
        "nik": nik_for(i, female=female, birth=birth, province=province),
        "kk_number": f"{province}710101{i:08d}",
        "full_name": f"Person {i}",
        "birth_date": birth.isoformat(),
        "gender": "F" if female else "M",
        "email": f"p{i}@example.id",
        "email_verified": "true",
        "phone": f"+62812{i:08d}",
        "domicile_regency_code": f"{province}71",
        "test_score": "75",
        "payout_provider": "wallet-a",
        "payout_account": f"08{i:010d}",
        "registered_at": f"2026-11-25T09:{i % 60:02d}:00+07:00",
    }
    row.update(overrides)
    return row


def write_export(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(REQUIRED_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path
