"""What the status page says to a registrant, rendered from its template without a server:
plain words only (no outcome or reason codes), and the announcement in the page's
language."""

from __future__ import annotations

import html
import re
from datetime import datetime
from types import SimpleNamespace

import pytest

from portal import words
from portal.app import Portal, _page, _wave_card
from portal.store import WaveView

BILINGUAL = "[id] Hasil gelombang 1 sudah diumumkan. [en] Wave 1 results are out."


def _status_page(lang: str, **view) -> str:
    wave = WaveView(
        wave_id=1,
        announced=True,
        message=view.pop("message", BILINGUAL),
        state=view.pop("state", "REJECTED"),
        reason=view.pop("reason", "EMAIL_UNVERIFIED"),
        pending_stage=None,
        card_number=view.pop("card_number", None),
        credited_at=view.pop("credited_at", None),
        applied_amount=view.pop("applied_amount", None),
    )
    portal = Portal(SimpleNamespace(portal_secure_cookie=False), None, None)  # type: ignore[arg-type]
    context = _page(lang, nik_masked="3201**********01", name=None, waves=[_wave_card(wave, lang)])
    return bytes(portal.render("status.html", **context).body).decode()


def _visible(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


@pytest.mark.parametrize("lang", ["id", "en"])
@pytest.mark.parametrize(
    "state, reason",
    [("REJECTED", "EMAIL_UNVERIFIED"), ("NOT_SELECTED", "QUOTA_FULL"), ("CREDITED", None)],
)
def test_the_status_page_shows_plain_words_and_no_codes(lang, state, reason):
    credited = {"card_number": "5000123412341234", "applied_amount": 1_000_000}
    extra = credited | {"credited_at": datetime(2026, 11, 29, 1, 0)} if state == "CREDITED" else {}
    text = _visible(_status_page(lang, state=state, reason=reason, **extra))
    outcome = "CREDITED" if state == "CREDITED" else state
    headline, what, next_step = words.explain(outcome, reason or "", lang)
    assert headline in text and what in text and next_step in text
    assert outcome not in text and (reason is None or reason not in text), text
    assert " · " not in text


def test_the_announcement_is_shown_in_the_pages_language():
    indonesian = _visible(_status_page("id"))
    english = _visible(_status_page("en"))
    assert "Hasil gelombang 1 sudah diumumkan." in indonesian
    assert "Wave 1 results are out" not in indonesian and "[id]" not in indonesian
    assert "Wave 1 results are out." in english
    assert "Hasil gelombang" not in english and "[en]" not in english
    plain = "Hasil gelombang 1 & lainnya"  # no language marks: as written, on both pages
    for lang in ("id", "en"):
        assert "Hasil gelombang 1 &amp; lainnya" in _status_page(lang, message=plain)
