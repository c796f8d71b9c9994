"""The structure of a NIK (Nomor Induk Kependudukan): `PP RR DD DDMMYY SSSS`.

Judges the number alone (registrant-file.md, "NIK structure"); `nik_matches` compares it
with the row.
"""

from dataclasses import dataclass
from datetime import date

PROVINCE_CODES: frozenset[str] = frozenset(
    [str(code) for code in range(11, 20)]
    + ["21"]
    + [str(code) for code in range(31, 37)]
    + [str(code) for code in range(51, 54)]
    + [str(code) for code in range(61, 66)]
    + [str(code) for code in range(71, 77)]
    + ["81", "82"]
    + [str(code) for code in range(91, 97)]
)

_FEMALE_DAY_OFFSET = 40
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True, slots=True)
class NikInfo:
    """What a NIK encodes; `day` is the real day of birth (the +40 for women removed)."""

    province: str
    regency: str
    district: str
    day: int
    month: int
    yy: int
    sex: str
    serial: str


def birth_and_sex(nik: str) -> tuple[int, int, int, str] | None:
    """`(day, month, yy, sex)` a NIK of 16 ASCII digits encodes, or None if its structure
    breaks: what `parse_nik` judges, without building a NikInfo (intake's hot path)."""
    if nik[0:2] not in PROVINCE_CODES or nik[2:4] == "00" or nik[4:6] == "00":
        return None
    if nik[12:16] == "0000":
        return None
    encoded_day, month, yy = int(nik[6:8]), int(nik[8:10]), int(nik[10:12])
    if 1 <= encoded_day <= 31:
        sex, day = "M", encoded_day
    elif 41 <= encoded_day <= 71:
        sex, day = "F", encoded_day - _FEMALE_DAY_OFFSET
    else:
        return None
    if not 1 <= month <= 12 or day > _DAYS_IN_MONTH[month]:
        return None
    # 29 February needs a leap year in 19YY or 20YY: any yy divisible by 4 has one
    # (yy 00 through 2000, since 1900 was not a leap year).
    if month == 2 and day == 29 and yy % 4 != 0:
        return None
    return day, month, yy, sex


def parse_nik(nik: str) -> NikInfo | None:
    """Decode a NIK of 16 ASCII digits (the caller checks that); None if its structure breaks."""
    facts = birth_and_sex(nik)
    if facts is None:
        return None
    day, month, yy, sex = facts
    return NikInfo(nik[0:2], nik[2:4], nik[4:6], day, month, yy, sex, nik[12:16])


def nik_matches(info: NikInfo, birth_date: date, gender: str) -> bool:
    """True when the NIK's day, month, two-digit year and sex agree with the row."""
    return birth_matches((info.day, info.month, info.yy, info.sex), birth_date, gender)


def birth_matches(facts: tuple[int, int, int, str], birth_date: date, gender: str) -> bool:
    """`nik_matches` on the tuple `birth_and_sex` returns."""
    return facts == (birth_date.day, birth_date.month, birth_date.year % 100, gender)


def is_valid_nik(text: str | None) -> bool:
    """Text that is a NIK: 16 ASCII digits whose structure holds (what intake's checks 3
    accept, and what the dashboard lets sign in)."""
    return (
        text is not None
        and len(text) == 16
        and text.isascii()
        and text.isdigit()
        and birth_and_sex(text) is not None
    )
