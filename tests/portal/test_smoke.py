"""The dashboard end to end: a credited registrant signs in with the code the gateway got."""

from __future__ import annotations

from tests.portal.conftest import export_rows, sign_in


def test_a_credited_registrant_signs_in_and_sees_the_balance(portal_wave, portal):
    rows = {r["nik"]: r for r in export_rows(portal_wave.export)}
    credited = next(
        nik for (outcome, _r, nik) in portal_wave.outcomes[1].values() if outcome == "CREDITED"
    )
    s = sign_in(portal, credited, rows[credited]["phone"])
    me = s.get(f"{portal.base_url}/api/me", timeout=10).json()
    assert me["nik_masked"] == credited[:4] + "*" * 10 + credited[-2:]
    first, second = me["waves"]
    assert first["outcome"] == "CREDITED" and first["balance"] == 1_000_000
    assert first["card_number_masked"].startswith("**** **** **** ")
    assert second == {"wave": 2, "announced": False}
