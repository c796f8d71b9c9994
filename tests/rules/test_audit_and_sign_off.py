"""The audit trail's hash chain and the sign-off digest: pure, small cases."""

from __future__ import annotations

from datetime import datetime

import pytest

from rules.audit import GENESIS, row_hash, verify_chain
from rules.signoff import Approval, approved_list_digest, same_person_key, valid_approvals


def _chain(n: int) -> list[dict]:
    rows, prev = [], GENESIS
    for i in range(1, n + 1):
        row = {
            "id": i,
            "at": datetime(2026, 11, 28, 10, 0, i),
            "who": "ani",
            "host": "ops-1",
            "action": "wave.run",
            "wave_id": 1,
            "before": None,
            "after": f'{{"n":{i}}}',
            "prev_hash": prev,
        }
        row["hash"] = row_hash(**{k: v for k, v in row.items()})
        rows.append(row)
        prev = row["hash"]
    return rows


def test_an_intact_chain_verifies():
    assert verify_chain(_chain(5)) == (5, None)


@pytest.mark.parametrize("field", ["who", "host", "action", "after", "at", "wave_id"])
def test_a_changed_field_breaks_the_chain_at_that_row(field):
    rows = _chain(5)
    rows[2][field] = {"who": "x", "host": "x", "action": "x", "after": "{}"}.get(
        field, datetime(2026, 1, 1) if field == "at" else 2
    )
    _, broken = verify_chain(rows)
    assert broken is not None and broken.id == 3 and "altered" in broken.why


def test_a_rehashed_row_is_caught_by_the_next_rows_link():
    rows = _chain(5)
    rows[2]["who"] = "mallory"
    rows[2]["hash"] = row_hash(**{k: v for k, v in rows[2].items() if k != "hash"})
    _, broken = verify_chain(rows)
    assert broken is not None and broken.id == 4 and "previous hash" in broken.why


def test_a_removed_row_is_named_as_missing():
    rows = _chain(5)
    del rows[1]
    _, broken = verify_chain(rows)
    assert broken is not None and broken.id == 2 and "missing" in broken.why


def _digest(confirmed, seats=10, balance=1_000_000):
    return approved_list_digest(
        seed_sha256="ab" * 32, seats=seats, training_balance=balance, confirmed=confirmed
    )


def test_the_digest_changes_with_the_list_the_seats_and_the_amount():
    base = [("3171010101900001", "6011000000000001")]
    d = _digest(base)
    assert _digest(list(base)) == d
    assert _digest(base + [("3171010101900002", "6011000000000002")]) != d
    assert _digest(base, seats=11) != d
    assert _digest(base, balance=2_000_000) != d
    assert "3171010101900001" not in d


def test_only_approvals_of_the_list_as_it_stands_count_once_per_person():
    approvals = [
        Approval("Ani", "t1", "old", audited=True),
        Approval("ani ", "t2", "new", audited=True),
        Approval("ANI", "t3", "new", audited=True),
        Approval("Budi", "t4", "new", audited=True),
        Approval("Citra", "t5", "new"),  # no audit row says so: not the program's
    ]
    assert [a.at for a in valid_approvals(approvals, "new")] == ["t2", "t4"]
    assert valid_approvals(approvals, "other") == []
    assert same_person_key("  Ani  Wijaya ") == same_person_key("ani wijaya")
