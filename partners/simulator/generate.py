"""Synthetic registrant export (registrant-file.md) with each row's intended result, streamed."""

import csv
import io
import os
import random
from collections import Counter, deque
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from partners.simulator.truth import (
    EXCLUSION_CATEGORIES,
    PAYMENT_PROVIDERS,
    PersonTruth,
    identity_reason,
    passes_everything,
    person_truth,
)
from rules.intake import REQUIRED_COLUMNS

# The export's columns, in the order registrant-file.md lists them.
COLUMNS = REQUIRED_COLUMNS
TRUTH_COLUMNS = (
    "line",
    "nik",
    "intended",
    "priority",
    "account_status",
    "credit_rejected",
    "sms_rejected",
)
PROVINCES = tuple(
    f"{p}"
    for p in (*range(11, 20), 21, *range(31, 37), 51, 52, 53, *range(61, 66), *range(71, 77))
    + (81, 82, *range(91, 97))
)
(NIK, KK, NAME, BIRTH, GENDER, EMAIL, VERIFIED, PHONE, DOMICILE, SCORE, PROVIDER, ACCOUNT) = range(
    1, 13
)
REGISTERED = 13
N_PROVINCES = len(PROVINCES)
REGENCIES, DISTRICTS = 40, 30
# Precomputed text pieces: formatting them per row would dominate the generator's time.
PLACES = tuple(
    tuple(
        tuple(f"{p}{r:02d}{d:02d}" for d in range(1, DISTRICTS + 1))
        for r in range(1, REGENCIES + 1)
    )
    for p in PROVINCES
)
SERIALS = tuple(f"{s:04d}" for s in range(1, 10000))
SCORES = tuple(str(s) for s in range(101))
TWO_DIGITS = tuple(f"{s:02d}" for s in range(100))
POWERS = tuple(10**n for n in range(14))

# Cumulative per-row shares of the intake faults (each row gets at most one).
MALFORMED_UNTIL = 0.001
MISSING_UNTIL = MALFORMED_UNTIL + 0.003
INVALID_UNTIL = MISSING_UNTIL + 0.002
MISMATCH_UNTIL = INVALID_UNTIL + 0.002
DUPLICATE_UNTIL = MISMATCH_UNTIL + 0.003
# Clean rows' verified share, so that about 74% of all rows are verified.
EMAIL_VERIFIED = 0.737
UNDERAGE = 0.01
AGE_18_TODAY = 0.002  # adults born exactly 18 years before the reference date
TEST_FAILED = 0.03
SCORE_60 = 0.03  # passing scores of exactly 60 (the boundary)
SHARED_KK_START = 0.0242  # new KKs that get 1-4 more members: ~8% of people share a KK
LAID_OFF_HOUSEHOLD = 0.0004  # new KKs that are a laid-off household passing everything
OTHER_DOMICILE = 0.02
SPECIAL_NAME = 0.015
MIN_AGE, MIN_TEST_SCORE = 18, 60

FIRST_NAMES = (
    "Siti Agus Budi Dewi Eko Fitri Gilang Hendra Indah Joko Kartika Lestari Made Nur Putri "
    "Rizky Sri Teguh Utami Wahyu Yogi Yusuf Ahmad Dian Fajar Ayu Bayu Citra Dimas Endang "
    "Kadek Ketut Maria Yohanes Rina Slamet Tri Wayan Bambang Ratna"
).split()
LAST_NAMES = (
    "Aminah Santoso Wijaya Saputra Hidayat Kurniawan Susanti Pratama Rahmawati Setiawan "
    "Nugroho Siregar Nasution Simanjuntak Harahap Lubis Purba Wibowo Gunawan Halim Tanjung "
    "Rahayu Lestari Permana Hakim Firmansyah Sinaga Panjaitan Sembiring Ginting Manurung"
).split()
# Punctuation, titles, commas, quotes and non-ASCII: the export must carry them intact.
SPECIAL_NAMES = (
    "Dr. Siti Aminah, S.E.",
    'Muhammad "Dedi" Santoso',
    "Ir. H. Bambang Sutrisno, M.Sc.",
    "Hj. Nur'aini",
    "I Gede O'Neil",
    "R. M. Sastro-Wardoyo",
    "Agus, Jr.",
    "Ni Luh Putu Ayu Wédari",
    "Nguyễn Văn An",
    "Zoë Hartono",
    "Renée Putri",
    "Sukarno",
    "Prof. Dr. dr. Hasan Basri, Sp.PD",
)
DOMAINS = ("gmail.com", "yahoo.co.id", "mail.example.id", "outlook.com")


def _csv_quoted(name: str) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([name])
    return out.getvalue()


# Names whose CSV form differs from the text (commas, quotes): RFC 4180 quoting via csv.
_QUOTED_NAMES = {n: q for n in SPECIAL_NAMES if (q := _csv_quoted(n)) != n}
_CHUNK = 4096
_EXCLUDED: dict[str | None, str] = {
    None: "ELIGIBLE",
    **{c: f"EXCLUDED_{c}" for c in EXCLUSION_CATEGORIES},
}


def _laid_off_and_passing(truth: PersonTruth) -> bool:
    return truth.laid_off and passes_everything(truth)


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a year without it
        return day.replace(year=day.year - years, day=28)


class _Timestamps:
    """Formats epoch seconds as ISO 8601 with one of Indonesia's three offsets, fast."""

    OFFSETS = ((7, "+07:00"), (8, "+08:00"), (9, "+09:00"))

    def __init__(self) -> None:
        # local minute -> "YYYY-MM-DDTHH:MM:"; rows come in time order, so this stays small.
        self._minutes: dict[int, str] = {}

    def format(self, epoch: int, offset: int) -> str:
        hours, suffix = self.OFFSETS[offset]
        minute, second = divmod(epoch + hours * 3600, 60)
        head = self._minutes.get(minute)
        if head is None:
            if len(self._minutes) > 50_000:
                self._minutes.clear()
            local = datetime.fromtimestamp(minute * 60, UTC)
            head = self._minutes[minute] = local.strftime("%Y-%m-%dT%H:%M:")
        return head + TWO_DIGITS[second] + suffix


class _Rows:
    """Yields (fields or raw line, intended result, truth) one row at a time."""

    def __init__(
        self, registrants: int, seed: str, reference_date: date, providers: tuple[str, ...]
    ) -> None:
        self.registrants = registrants
        self.seed = seed
        self.rng = random.Random(seed)
        self.providers = providers
        self.adult_latest = _years_before(reference_date, MIN_AGE).toordinal()
        self.age17_latest = _years_before(reference_date, MIN_AGE - 1).toordinal()
        start = datetime(*reference_date.timetuple()[:3], tzinfo=UTC) - timedelta(hours=7)
        self.start_epoch = int(start.timestamp()) - 3 * 86400
        self.span = 3 * 86400
        self.row_span = self.span / registrants
        self.stamps = _Timestamps()
        self.nik_counter = 0
        self.kk_counter = 0
        self.row = 0
        self.open_households: deque[list[Any]] = deque()
        self.recent_clean: deque[tuple[list[str], PersonTruth, int, str]] = deque(maxlen=64)
        self.names = [(f"{f} {last}", f.lower()) for f in FIRST_NAMES for last in LAST_NAMES]
        self.names += [(f, f.lower()) for f in FIRST_NAMES]
        self.n_names = len(self.names)
        # birth ordinal -> (ISO date, NIK date code for men, for women); a few thousand entries
        self.births: dict[int, tuple[str, str, str]] = {}
        self.n_providers = len(providers)
        self.laid_off_households = 0

    def _nik_place(self) -> tuple[str, str]:
        """PPRRDD + serial: unique by construction, the counter spread over the codes."""
        i = self.nik_counter
        self.nik_counter += 1
        rest, province = divmod(i, N_PROVINCES)
        rest, regency = divmod(rest, REGENCIES)
        serial, district = divmod(rest, DISTRICTS)
        if serial >= 9999:
            raise ValueError("more registrants than the NIK space of the generator")
        return PLACES[province][regency][district], SERIALS[serial]

    def _person(
        self, kk: str | None, clean: bool, want: Callable[[PersonTruth], bool] | None = None
    ) -> tuple[list[str], bool, bool, int, PersonTruth]:
        """A consistent person: fields, underage, test failed, registered epoch, truth.

        With `want`, NIKs are redrawn (only the place and serial) until the truth fits.
        """
        rand = self.rng.random
        female = rand() < 0.5
        u = rand()
        underage = not clean and u < UNDERAGE
        if underage:
            # Age 17; a fifth turn 18 tomorrow (the boundary).
            span = self.age17_latest - self.adult_latest
            birth_ordinal = self.adult_latest + (1 if u < UNDERAGE / 5 else 1 + int(rand() * span))
        elif u < UNDERAGE + AGE_18_TODAY:
            birth_ordinal = self.adult_latest
        else:
            birth_ordinal = self.adult_latest - 1 - int(rand() * 14600)
        cached = self.births.get(birth_ordinal)
        if cached is None:
            birth = date.fromordinal(birth_ordinal)
            code = f"{birth.month:02d}{birth.year % 100:02d}"
            cached = self.births[birth_ordinal] = (
                birth.isoformat(),
                f"{birth.day:02d}{code}",
                f"{birth.day + 40:02d}{code}",
            )
        birth_text, male_code, female_code = cached
        nik_date = female_code if female else male_code
        seed = self.seed
        while True:
            place, serial = self._nik_place()
            nik = place + nik_date + serial
            truth = person_truth(seed, nik)
            if want is None or want(truth):
                break
        if kk is None:
            self.kk_counter += 1
            kk = f"{place}{self.kk_counter:010d}"
        if not clean and rand() < SPECIAL_NAME:
            name = SPECIAL_NAMES[int(rand() * len(SPECIAL_NAMES))]
            slug = "user"
        else:
            name, slug = self.names[int(rand() * self.n_names)]
        u = rand()
        test_failed = not clean and u < TEST_FAILED
        if test_failed:
            score = "59" if u < TEST_FAILED * 0.3 else SCORES[int(rand() * 59)]
        elif u < TEST_FAILED + SCORE_60:
            score = "60"
        else:
            score = SCORES[61 + int(rand() * 40)]
        digits = 9 + int(rand() * 3)
        power = POWERS[digits]
        phone = "+628" + str(power + int(rand() * power))[1:]
        domicile = place[:4]
        if rand() < OTHER_DOMICILE:
            domicile = PLACES[int(rand() * N_PROVINCES)][int(rand() * REGENCIES)][0][:4]
        provider = self.providers[int(rand() * self.n_providers)]
        if provider.startswith("wallet"):
            account = "0" + phone[3:]
        else:
            account = str(10_000_000_000 + int(rand() * 10_000_000_000))[1:]
        self.row = row = self.row + 1
        epoch = self.start_epoch + int((row - rand()) * self.row_span)
        u = rand()
        fields = [
            "REG-" + str(1_000_000_000 + row)[1:],
            nik,
            kk,
            name,
            birth_text,
            "F" if female else "M",
            f"{slug}.{row}@{DOMAINS[row & 3]}",
            "true" if clean or rand() < EMAIL_VERIFIED else "false",
            phone,
            domicile,
            score,
            provider,
            account,
            self.stamps.format(epoch, 0 if u < 0.7 else (1 if u < 0.9 else 2)),
        ]
        return fields, underage, test_failed, epoch, truth

    def _laid_off_household(self) -> Iterator[tuple[Any, str, PersonTruth]]:
        # Every member is laid off and passes every check, so the household cap decides.
        self.laid_off_households += 1
        kk = None
        for _ in range(3 + int(self.rng.random() * 3)):
            fields, _, _, epoch, truth = self._person(kk, clean=True, want=_laid_off_and_passing)
            kk = fields[KK]
            self.recent_clean.append((fields, truth, epoch, fields[REGISTERED]))
            yield fields, "ELIGIBLE", truth

    def __iter__(self) -> Iterator[tuple[Any, str, PersonTruth]]:
        rand = self.rng.random
        households = self.open_households
        while True:
            kk = None
            if households and rand() < 0.5:
                # Join the oldest open shared household.
                household = households[0]
                kk = household[0]
                household[1] -= 1
                if household[1] == 0:
                    households.popleft()
            if kk is None and rand() < LAID_OFF_HOUSEHOLD:
                yield from self._laid_off_household()
                continue
            fault = rand()
            if MISMATCH_UNTIL <= fault < DUPLICATE_UNTIL and self.recent_clean:
                yield self._duplicate()
                continue
            fields, underage, test_failed, epoch, truth = self._person(kk, clean=False)
            if kk is None and rand() < SHARED_KK_START:
                households.append([fields[KK], 1 + int(rand() * 4)])
            if fault < MISMATCH_UNTIL:
                fields[VERIFIED] = "true"  # one intake fault per row
                if fault < MALFORMED_UNTIL:
                    yield self._malformed(fields), "MALFORMED_ROW", truth
                elif fault < MISSING_UNTIL:
                    yield self._missing(fields), "MISSING_FIELD", truth
                elif fault < INVALID_UNTIL:
                    yield self._invalid(fields), "INVALID_NIK", truth
                else:
                    yield self._mismatch(fields), "NIK_DATA_MISMATCH", truth
                continue
            self.recent_clean.append((fields, truth, epoch, fields[REGISTERED]))
            if fields[VERIFIED] == "false":
                intended = "EMAIL_UNVERIFIED"
            elif underage:
                intended = "UNDERAGE"
            elif test_failed:
                intended = "TEST_FAILED"
            else:
                intended = identity_reason(truth) or _EXCLUDED[truth.excluded_category]
            yield fields, intended, truth

    def _duplicate(self) -> tuple[list[str], str, PersonTruth]:
        # The same person registers again, later, under a new registration id.
        rand = self.rng.random
        original, truth, epoch, _ = self.recent_clean[int(rand() * len(self.recent_clean))]
        self.row += 1
        now = self.start_epoch + int(self.row * self.span / self.registrants)
        fields = list(original)
        fields[0] = f"REG-{self.row:09d}"
        later = max(now, epoch + 1 + int(rand() * 600))
        fields[REGISTERED] = self.stamps.format(later, 0)
        return fields, "DUPLICATE_NIK", truth

    def _malformed(self, fields: list[str]) -> str | list[str]:
        kind = int(self.rng.random() * 3)
        if kind == 0:
            return [*fields, "extra"]
        if kind == 1:
            return fields[:-1]
        # A stray quote inside an unquoted field: bad RFC 4180 quoting, written raw.
        fields[NAME] = 'Siti Am"inah'
        return ",".join(fields)

    def _missing(self, fields: list[str]) -> list[str]:
        rand = self.rng.random
        kind = int(rand() * 10)
        if kind == 0:
            fields[NAME] = ""
        elif kind == 1:
            fields[PHONE] = "0" + fields[PHONE][3:]
        elif kind == 2:
            fields[BIRTH] = fields[BIRTH][:8] + "32"
        elif kind == 3:
            fields[SCORE] = "101"
        elif kind == 4:
            fields[GENDER] = "X"
        elif kind == 5:
            fields[EMAIL] = ""
        elif kind == 6:
            fields[ACCOUNT] = ""
        elif kind == 7:
            fields[REGISTERED] = fields[REGISTERED][:19]  # no offset
        elif kind == 8:
            fields[KK] = fields[KK][:15]
        else:
            fields[VERIFIED] = "yes"
        return fields

    def _invalid(self, fields: list[str]) -> list[str]:
        nik = fields[NIK]
        kind = int(self.rng.random() * 4)
        if kind == 0:
            nik = ("00" if self.rng.random() < 0.5 else "99") + nik[2:]
        elif kind == 1:
            nik = nik[:12] + "0000"
        elif kind == 2:
            nik = nik[:6] + ("75" if fields[GENDER] == "F" else "35") + nik[8:]
        else:
            nik = nik[:2] + "00" + nik[4:]
        fields[NIK] = nik
        return fields

    def _mismatch(self, fields: list[str]) -> list[str]:
        rand = self.rng.random
        if rand() < 0.3:
            fields[GENDER] = "M" if fields[GENDER] == "F" else "F"
        else:
            birth = date.fromisoformat(fields[BIRTH]) - timedelta(days=1 + int(rand() * 400))
            fields[BIRTH] = birth.isoformat()
        return fields


def generate_export(
    out_path: str | Path,
    *,
    registrants: int,
    seed: str,
    reference_date: date,
    truth_path: str | Path | None = None,
    providers: tuple[str, ...] = PAYMENT_PROVIDERS,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write `registrants` data rows; partner fates come from person_truth(seed, nik) only.

    The truth file (if asked) has one row per data row: `line` is the row's line number in
    the export (the header is line 1), and `intended` the result the program should reach
    with the default settings (min_age 18, min_test_score 60, name_score_min 80).
    """
    rows = _Rows(registrants, seed, reference_date, tuple(providers))
    counts: Counter[str] = Counter()
    quoted = _QUOTED_NAMES
    bools = ("false", "true")
    lines: list[str] = []
    truth_lines: list[str] = []
    written = 0
    with (
        open(out_path, "w", encoding="utf-8", newline="") as fh,
        open(truth_path or os.devnull, "w", encoding="utf-8", newline="") as truth_fh,
    ):
        fh.write(",".join(COLUMNS) + "\n")
        truth_fh.write(",".join(TRUTH_COLUMNS) + "\n")
        for fields, intended, t in rows:
            written += 1
            counts[intended] += 1
            if isinstance(fields, str):
                lines.append(fields)
                nik = fields.split(",")[NIK]
            else:
                name = quoted.get(fields[NAME])
                if name is not None:
                    fields = [*fields[:NAME], name, *fields[NAME + 1 :]]
                lines.append(",".join(fields))
                nik = fields[NIK]
            if truth_path:
                truth_lines.append(
                    f"{written + 1},{nik},{intended},{bools[t.laid_off]},{t.account_status},"
                    f"{bools[t.credit_rejected]},{bools[t.sms_rejected]}"
                )
            if written % _CHUNK == 0 or written >= registrants:
                # Plain fields never need quoting (only names may): join in bulk, write a chunk.
                lines.append("")
                fh.write("\n".join(lines))
                lines.clear()
                if truth_lines:
                    truth_lines.append("")
                    truth_fh.write("\n".join(truth_lines))
                    truth_lines.clear()
                if progress and (written % 100_000 == 0 or written >= registrants):
                    progress(written)
                if written >= registrants:
                    break
    return {
        "rows": written,
        "intended": dict(sorted(counts.items())),
        "laid_off_households": rows.laid_off_households,
    }
