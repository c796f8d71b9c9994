"""An independent recomputation of a wave's outcomes from the generator's truth file.

It re-derives the draw from wave-rules.md by hand (sha256 keys, priority first, rounds
of backfill) without importing the project's rules, so the end-to-end test can catch a
wrong decision anywhere in the pipeline.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter

ACCOUNT_REASON = {
    "NOT_FOUND": "ACCOUNT_NOT_FOUND",
    "NIK_MISMATCH": "ACCOUNT_NIK_MISMATCH",
    "NOT_KYC": "ACCOUNT_NOT_KYC",
    "BLOCKED": "ACCOUNT_BLOCKED",
}


def read_truth(truth_path: str, export_path: str) -> list[dict]:
    with open(export_path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        kk_i, nik_i = header.index("kk_number"), header.index("nik")
        by_nik_kk: dict[str, str] = {}
        for row in reader:
            if len(row) == len(header):
                by_nik_kk.setdefault(row[nik_i], row[kk_i])
    with open(truth_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["line"] = int(r["line"])
        r["priority"] = r["priority"].lower() == "true"
        r["credit_rejected"] = r["credit_rejected"].lower() == "true"
        r["kk"] = by_nik_kk.get(r["nik"], "")
    return rows


def expected_outcomes(truth: list[dict], *, seed: str, quota: int, cap: int = 2) -> dict:
    """line -> (outcome, reason) for a closed national wave with backfill."""
    expected: dict[int, tuple[str, str]] = {}
    pool = []
    for r in truth:
        if r["intended"] == "ELIGIBLE":
            pool.append(r)
        else:
            expected[r["line"]] = ("REJECTED", r["intended"])

    def key(r: dict) -> tuple:
        digest = hashlib.sha256(f"{seed}:{r['nik']}".encode()).hexdigest()
        return (0 if r["priority"] else 1, digest)

    order = sorted(pool, key=key)
    households: Counter = Counter()
    held = 0  # seats held: selected people whose account did not fail
    waitlist = order
    round_no = 0
    while True:
        free = quota - held
        if free <= 0 or not waitlist:
            break
        offered, rest = [], []
        for r in waitlist:
            if free - len(offered) <= 0:
                rest.append(r)
                continue
            if cap and households[r["kk"]] >= cap:
                expected[r["line"]] = ("NOT_SELECTED", "HOUSEHOLD_CAP")
                continue
            offered.append(r)
            households[r["kk"]] += 1
        if not offered:
            break
        # Their accounts are checked before the next round: failures free the seat.
        for r in offered:
            status = r["account_status"]
            if status != "VERIFIED":
                expected[r["line"]] = ("REJECTED", ACCOUNT_REASON[status])
                households[r["kk"]] -= 1
            elif r["credit_rejected"]:
                expected[r["line"]] = ("REJECTED", "CREDIT_REJECTED")
                held += 1
            else:
                expected[r["line"]] = ("CREDITED", "")
                held += 1
        waitlist = rest
        round_no += 1
    for r in waitlist:
        expected.setdefault(r["line"], ("NOT_SELECTED", "QUOTA_FULL"))
    return expected
