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


# ---------------------------------------------------------------- after the credit
@pytest.mark.parametrize("lang", ["id", "en"])
def test_every_lifecycle_state_and_reason_has_its_own_words(lang):
    from partners.payment import DISBURSEMENT_FAILURE_REASONS
    from portal.lifecycle import PAYMENT_STATUSES, SURVEY_STATUSES
    from rules.lifecycle import LifecycleState, RevokeReason

    sentences = set()
    for state in LifecycleState:
        reasons = [r.value for r in RevokeReason] if state == LifecycleState.REVOKED else [""]
        for reason in reasons:
            key = f"{state.value}:{reason}" if reason else state.value
            assert key in words.LIFECYCLE, key  # its own entry, not a fallback
            headline, what, next_step = words.lifecycle_explain(state.value, reason, lang)
            assert headline and what and next_step
            sentences.add(what)
    assert len(sentences) == len(LifecycleState) + len(RevokeReason) - 1

    # A payment stopped by a re-check (BLACKLISTED, DECEASED, every agency category) or
    # failed at the payment partner says what it means and what to do, each its own.
    stop_reasons = ["BLACKLISTED", "DECEASED"] + [
        r.value for r in ReasonCode if r.value.startswith("EXCLUDED_")
    ]
    meanings = set()
    for reason in [*stop_reasons, *sorted(DISBURSEMENT_FAILURE_REASONS)]:
        assert reason in words.PAYMENT_REASON, reason
        means, todo = words.payment_reason(reason, lang)
        assert means and todo
        meanings.add(means)
    assert len(meanings) == len(stop_reasons) + len(DISBURSEMENT_FAILURE_REASONS)
    means, _ = words.payment_reason("EXCLUDED_FISHERY_BOARD", lang)
    assert means == words._PAYMENT_REASON_OTHER[lang][0]

    assert set(words.PAYMENT_STATUS) == set(PAYMENT_STATUSES)
    assert set(words.SURVEY_STATUS) == set(SURVEY_STATUSES)
    assert len({words.PAYMENT_STATUS[s][lang] for s in PAYMENT_STATUSES}) == 5
    assert len({words.SURVEY_STATUS[s][lang] for s in SURVEY_STATUSES}) == 4


def test_every_survey_question_and_choice_has_words_in_both_languages():
    from portal.lifecycle import CHOICES

    assert set(words.SURVEY_QUESTIONS) == {*CHOICES, "comment"}
    for name, choices in CHOICES.items():
        shown = {str(c).lower() for c in choices}
        assert set(words.SURVEY_CHOICES[name]) == shown, name
        for label in words.SURVEY_CHOICES[name].values():
            assert label["id"] and label["en"]
    assert words.SURVEY_QUESTIONS["recommend"]["id"] != words.SURVEY_QUESTIONS["recommend"]["en"]


def test_lifecycle_dates_read_in_wib():
    assert words.date_text("2020-05-21", "id") == "21 Mei 2020"
    assert words.date_text("2020-05-21", "en") == "21 May 2020"
    assert words.wib_iso_text("2020-05-26T02:14:00+07:00", "id") == "26 Mei 2020, 02.14 WIB"
    assert words.wib_iso_text("2020-05-25T19:14:00+00:00", "en") == "26 May 2020, 02:14 WIB"
