"""Every outcome and reason has a plain sentence and a next step in both languages."""

from __future__ import annotations

from datetime import datetime

import pytest

from models.enums import Outcome, PendingReason, ReasonCode
from portal import words


@pytest.mark.parametrize("lang", ["id", "en"])
def test_every_reason_and_outcome_has_its_own_sentence_and_next_step(lang):
    seen = set()
    for reason in [*ReasonCode, *PendingReason]:
        outcome = "PENDING" if reason in set(PendingReason) else "REJECTED"
        headline, what, next_step = words.explain(outcome, reason.value, lang)
        assert reason.value in words.EXPLAIN, reason
        assert headline and what and next_step
        seen.add(what)
    for outcome in ["ELIGIBLE", "WAITLISTED", "SELECTED", "CONFIRMED", "CREDITED"]:
        headline, what, _ = words.explain(outcome, "", lang)
        assert headline == words.OUTCOME[outcome][lang]
        seen.add(what)
    # No two reasons share a sentence: each says what happened to that person.
    assert len(seen) == len(ReasonCode) + len(PendingReason) + 5
    assert set(words.OUTCOME) == {o.value for o in Outcome}


def test_the_two_languages_differ_and_an_unknown_agency_category_still_reads():
    assert words.explain("REJECTED", "NIK_NOT_FOUND", "id") != words.explain(
        "REJECTED", "NIK_NOT_FOUND", "en"
    )
    assert "Dukcapil" in words.explain("REJECTED", "NIK_NOT_FOUND", "id")[2]
    assert "next wave" in words.explain("NOT_SELECTED", "QUOTA_FULL", "en")[2]
    _, what, _ = words.explain("REJECTED", "EXCLUDED_FISHERY_BOARD", "en")
    assert "agency" in what


def test_rupiah_and_wib():
    assert words.rupiah(1_000_000) == "Rp1.000.000"
    assert words.rupiah(600) == "Rp600"
    assert words.to_wib(datetime(2020, 4, 21, 16, 10, 0, 999)).isoformat() == (
        "2020-04-21T23:10:00+07:00"
    )
    assert words.wib_text(datetime(2020, 4, 21, 16, 10), "id") == "21 April 2020, 23.10 WIB"
    assert words.wib_text(datetime(2020, 4, 21, 17, 5), "en") == "22 April 2020, 00:05 WIB"
    assert (
        words.lang_of("en") == "en" and words.lang_of("fr") == "id" and words.lang_of(None) == "id"
    )


@pytest.mark.parametrize(
    "message, lang, shown",
    [
        ("[id] Hasil sudah keluar. [en] Results are out.", "id", "Hasil sudah keluar."),
        ("[id] Hasil sudah keluar. [en] Results are out.", "en", "Results are out."),
        ("[EN] Results are out.\n[ID] Hasil sudah keluar.", "id", "Hasil sudah keluar."),
        (
            "Gelombang 1: [id] hasil keluar. [en] results are out.",
            "en",
            "Gelombang 1: results are out.",
        ),
        ("[id] Hanya dalam Bahasa Indonesia.", "en", "Hanya dalam Bahasa Indonesia."),
        ("Tanpa tanda bahasa [x] & <b>", "en", "Tanpa tanda bahasa [x] & <b>"),
        ("", "id", ""),
    ],
)
def test_an_announcement_written_in_both_languages_shows_one(message, lang, shown):
    assert words.message_in(message, lang) == shown
