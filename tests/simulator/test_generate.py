"""The synthetic export follows registrant-file.md and carries the intended results."""

import csv
import hashlib
from collections import Counter, defaultdict
from datetime import date, datetime

import pytest

from partners.simulator.generate import COLUMNS, PROVINCES, generate_export
from partners.simulator.truth import identity_result, person_truth

SEED = "gen-test"
REFERENCE = date(2020, 4, 11)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    out, truth = folder / "export.csv", folder / "truth.csv"
    summary = generate_export(
        out, registrants=20_000, seed=SEED, reference_date=REFERENCE, truth_path=truth
    )
    with open(out, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    with open(truth, encoding="utf-8", newline="") as fh:
        intended = list(csv.DictReader(fh))
    return {"path": out, "rows": rows, "truth": intended, "summary": summary}


def test_same_seed_gives_the_same_file(export, tmp_path):
    again = tmp_path / "again.csv"
    generate_export(again, registrants=20_000, seed=SEED, reference_date=REFERENCE)
    digest = hashlib.sha256(export["path"].read_bytes()).hexdigest()
    assert hashlib.sha256(again.read_bytes()).hexdigest() == digest
    other = tmp_path / "other.csv"
    generate_export(other, registrants=2_000, seed="other", reference_date=REFERENCE)
    assert other.read_bytes()[:5000] != export["path"].read_bytes()[:5000]


def test_header_and_every_row_but_malformed_ones_parse_to_the_header_width(export):
    header, *data = export["rows"]
    assert tuple(header) == COLUMNS
    assert len(data) == len(export["truth"]) == export["summary"]["rows"] == 20_000
    lines = export["path"].read_text(encoding="utf-8").split("\n")
    malformed = 0
    for row, truth in zip(data, export["truth"], strict=True):
        if truth["intended"] == "MALFORMED_ROW":
            malformed += 1
            raw = lines[int(truth["line"]) - 1]
            assert len(row) != len(COLUMNS) or '"' in raw.split(",")[3], raw
        else:
            assert len(row) == len(COLUMNS), row
            assert row[1] == truth["nik"]
    assert 5 <= malformed <= 40


def test_intended_shares_roughly_match(export):
    counts = Counter(t["intended"] for t in export["truth"])
    rows = len(export["truth"])
    verified = rows - counts["EMAIL_UNVERIFIED"]
    assert 0.70 <= verified / rows <= 0.78
    identity = {"NIK_NOT_FOUND", "DECEASED", "BIRTH_DATE_MISMATCH", "NAME_MISMATCH", "KK_MISMATCH"}
    rejected_there = sum(counts[r] for r in identity)
    passed = counts["ELIGIBLE"] + sum(n for r, n in counts.items() if r.startswith("EXCLUDED_"))
    assert 0.70 <= passed / (passed + rejected_there) <= 0.78
    for reason, low, high in [
        ("MISSING_FIELD", 20, 110),
        ("INVALID_NIK", 15, 80),
        ("NIK_DATA_MISMATCH", 15, 80),
        ("DUPLICATE_NIK", 25, 110),
        ("UNDERAGE", 100, 250),
        ("TEST_FAILED", 300, 700),
    ]:
        assert low <= counts[reason] <= high, reason
    assert counts == Counter(export["summary"]["intended"])


def test_niks_are_unique_except_duplicate_registrations(export):
    data = export["rows"][1:]
    seen = {}
    for row, truth in zip(data, export["truth"], strict=True):
        if truth["intended"] in ("MALFORMED_ROW", "DUPLICATE_NIK"):
            continue
        assert truth["nik"] not in seen, truth
        seen[truth["nik"]] = row
    for row, truth in zip(data, export["truth"], strict=True):
        if truth["intended"] == "DUPLICATE_NIK":
            earlier = seen[truth["nik"]]
            assert earlier[1:13] == row[1:13] and earlier[0] != row[0]
            assert datetime.fromisoformat(earlier[13]) < datetime.fromisoformat(row[13])


def test_valid_rows_agree_with_their_nik_and_the_boundaries_are_covered(export):
    ages, scores = Counter(), Counter()
    same_domicile = valid = 0
    for row, truth in zip(export["rows"][1:], export["truth"], strict=True):
        if truth["intended"] in {
            "MALFORMED_ROW",
            "MISSING_FIELD",
            "INVALID_NIK",
            "NIK_DATA_MISMATCH",
        }:
            continue
        nik, birth, gender = row[1], date.fromisoformat(row[4]), row[5]
        day = int(nik[6:8])
        assert (day > 40) == (gender == "F")
        assert (day - 40 if day > 40 else day, int(nik[8:10]), int(nik[10:12])) == (
            birth.day,
            birth.month,
            birth.year % 100,
        )
        assert row[9][:2] in PROVINCES and row[9][2:] != "00"
        same_domicile += nik[:4] == row[9]
        assert row[8].startswith("+628") and 11 <= len(row[8]) <= 16
        assert len(row[2]) == 16 and row[2].isdigit()
        assert row[13][:10] in {"2020-04-08", "2020-04-09", "2020-04-10", "2020-04-11"}
        age = (
            REFERENCE.year
            - birth.year
            - ((REFERENCE.month, REFERENCE.day) < (birth.month, birth.day))
        )
        ages[age] += 1
        valid += 1
        scores[int(row[10])] += 1
        assert (age < 18) == (truth["intended"] == "UNDERAGE") or truth["intended"] in {
            "EMAIL_UNVERIFIED",
            "DUPLICATE_NIK",
        }
    assert ages[17] > 0 and ages[18] > 0 and min(ages) == 17
    assert scores[59] > 0 and scores[60] > 0
    assert 0.95 <= same_domicile / valid < 1


def test_intended_identity_results_match_what_the_registry_says(export):
    checked = 0
    for truth in export["truth"]:
        if truth["intended"] in {"NIK_NOT_FOUND", "KK_MISMATCH", "ELIGIBLE", "NAME_MISMATCH"}:
            answer = identity_result(person_truth(SEED, truth["nik"]))
            if truth["intended"] == "NIK_NOT_FOUND":
                assert answer == {"found": False}
            elif truth["intended"] == "KK_MISMATCH":
                assert answer["kk_match"] is False
            elif truth["intended"] == "NAME_MISMATCH":
                assert answer["name_score"] < 80
            else:
                assert answer["found"] and answer["name_score"] >= 80 and answer["kk_match"]
            checked += 1
    assert checked > 5000


def test_laid_off_households_share_a_kk_and_pass_everything(export):
    households = defaultdict(list)
    for row, truth in zip(export["rows"][1:], export["truth"], strict=True):
        if len(row) == len(COLUMNS) and truth["intended"] != "DUPLICATE_NIK":
            households[row[2]].append(truth)
    laid_off = [
        members
        for members in households.values()
        if len(members) >= 3 and all(m["priority"] == "true" for m in members)
    ]
    assert len(laid_off) == export["summary"]["laid_off_households"] >= 2
    for members in laid_off:
        assert {m["intended"] for m in members} == {"ELIGIBLE"}
        assert {m["account_status"] for m in members} == {"VERIFIED"}
    shared = sum(len(m) for m in households.values() if len(m) > 1)
    assert 0.05 <= shared / len(export["truth"]) <= 0.12
