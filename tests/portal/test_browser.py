"""The dashboard's pages in a real headless Chromium (portal.md, "Pages"): sign-in through
the forms with the code the gateway received, the status page in both languages with the
sentence for each outcome, a 360-pixel phone screen, axe-core, and logout.

Chromium is Debian's (`/usr/bin/chromium`): Playwright's own browsers cannot be
downloaded here, so `playwright install` is never run. Without that binary the module is
skipped; CI (`.ci/run`) installs it. Screenshots of the pages are kept in
`var/screenshots/` for a person to look at.

Each NIK may ask for 3 codes per 15 minutes and the guard table lives as long as the
module's database, so every test signs in with a registrant of its own (`Registrants`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.portal.conftest import ROOT, PortalProcess, export_rows

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"Debian's Chromium is not installed ({CHROMIUM}): apt-get install chromium",
)
pytest.importorskip("pytest_playwright", reason="pytest-playwright is not installed (dev extra)")
pytest.importorskip("axe_playwright_python", reason="axe-playwright-python is not installed")

from axe_playwright_python.sync_playwright import Axe  # noqa: E402
from playwright.sync_api import Page, expect  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "var" / "screenshots"
PHONE = {"width": 360, "height": 740}

# What the pages say, written out here rather than taken from portal/words.py, so a
# wrong or missing sentence fails the test.
SAY = {
    "id": {
        "signin": "Masuk",
        "nik": "NIK (16 angka)",
        "send": "Kirim kode",
        "code_heading": "Masukkan kode",
        "code": "Kode (6 angka)",
        "verify": "Masuk",
        "bad_code": "Kode salah atau sudah tidak berlaku.",
        "status": "Status pendaftaran Anda",
        "switch": "English",
        "not_announced": "Pendaftaran Anda sedang diverifikasi. Hasilnya diumumkan di sini.",
        "logout": "Keluar",
    },
    "en": {
        "signin": "Sign in",
        "nik": "NIK (16 digits)",
        "send": "Send code",
        "code_heading": "Enter your code",
        "code": "Code (6 digits)",
        "verify": "Sign in",
        "bad_code": "The code is wrong or no longer valid.",
        "status": "Your registration",
        "switch": "Bahasa Indonesia",
        "not_announced": "Your registration is being verified. The result will be announced here.",
        "logout": "Sign out",
    },
}
# Outcome (reason) -> language -> (headline, what to do next).
OUTCOME_SAYS = {
    ("CREDITED", ""): {
        "id": ("Saldo sudah masuk", "Gunakan saldo untuk membeli pelatihan pertama Anda."),
        "en": ("Balance credited", "Use the balance to buy your first training course."),
    },
    ("NOT_SELECTED", "QUOTA_FULL"): {
        "id": ("Tidak terpilih", "Daftar lagi di gelombang berikutnya."),
        "en": ("Not selected", "Register for the next wave."),
    },
    ("REJECTED", "NIK_NOT_FOUND"): {
        "id": (
            "Tidak lolos",
            "Periksa NIK Anda di Dinas Kependudukan dan Pencatatan Sipil (Dukcapil), "
            "lalu daftar lagi.",
        ),
        "en": (
            "Not accepted",
            "Check your NIK with the civil registry office (Dukcapil), then register again.",
        ),
    },
}


# --------------------------------------------------------------------------- browser
@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium instead of a browser Playwright would download."""
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


# pytest-playwright starts Playwright once per session. Its sync API leaves its asyncio
# loop marked as running in the main thread, and Prefect, seeing a running loop, then
# hands back coroutines instead of results: the waves of `portal_wave` (and any flow
# a later test module runs) fail. So here Playwright lives for this module only, is
# started after the waves have run (it needs `portal`) and stops before the next
# database's waves. The fixtures below are pytest-playwright's, narrowed to the module.
@pytest.fixture(scope="module")
def playwright(portal):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser_type(playwright, browser_name):
    return getattr(playwright, browser_name)


@pytest.fixture(scope="module")
def launch_browser(browser_type_launch_args, browser_type):
    def launch(**kwargs):
        return browser_type.launch(**{**browser_type_launch_args, **kwargs})

    return launch


@pytest.fixture(scope="module")
def browser(launch_browser):
    browser = launch_browser()
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def browser_context_args(playwright):
    return {}


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


# --------------------------------------------------------------------------- people
@dataclass(frozen=True)
class Person:
    nik: str
    phone: str
    name: str
    outcome: str
    reason: str


@dataclass
class Registrants:
    """Wave-1 registrants to sign in as, each handed out once per module."""

    by_outcome: dict[tuple[str, str], list[Person]]
    used: set[str] = field(default_factory=set)

    def take(self, outcome: str, reason: str = "", *, longest_name: bool = False) -> Person:
        people = [p for p in self.by_outcome.get((outcome, reason), []) if p.nik not in self.used]
        assert people, f"no unused wave-1 registrant with {outcome} {reason}"
        person = max(people, key=lambda p: len(p.name)) if longest_name else people[0]
        self.used.add(person.nik)
        return person


@pytest.fixture(scope="module")
def registrants(portal_wave) -> Registrants:
    rows = export_rows(portal_wave.export)
    once = {nik for nik, n in Counter(r["nik"] for r in rows).items() if n == 1}
    by_nik = {r["nik"]: r for r in rows}
    by_outcome: dict[tuple[str, str], list[Person]] = {}
    for outcome, reason, nik in portal_wave.outcomes[1].values():
        row = by_nik.get(nik)
        # Only a NIK with one row, 16 digits and a phone: its page is unambiguous.
        if nik in once and re.fullmatch(r"\d{16}", nik) and row and row["phone"]:
            person = Person(nik, row["phone"], row["full_name"], outcome, reason)
            by_outcome.setdefault((outcome, reason), []).append(person)
    return Registrants(by_outcome)


# --------------------------------------------------------------------------- steps
def ask_code(page: Page, portal: PortalProcess, person: Person, lang: str = "id") -> str:
    """From the sign-in page: type the NIK, send; the code page shows. The code sent."""
    say = SAY[lang]
    expect(page.get_by_role("heading", level=1)).to_have_text(say["signin"])
    after = portal.latest_code_seq()
    page.get_by_label(say["nik"]).press_sequentially(person.nik)
    page.get_by_role("button", name=say["send"]).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(say["code_heading"])
    assert person.nik not in page.url, "the NIK must never be in a URL"
    code = portal.code_sent_to(person.phone, after)
    assert code is not None, "the gateway received no code"
    return code


def enter_code(page: Page, portal: PortalProcess, code: str, lang: str = "id") -> None:
    say = SAY[lang]
    page.get_by_label(say["code"]).press_sequentially(code)
    page.get_by_role("button", name=say["verify"], exact=True).click()
    expect(page).to_have_url(f"{portal.base_url}/status?lang={lang}")
    expect(page.get_by_role("heading", level=1)).to_have_text(say["status"])


def sign_in_page(page: Page, portal: PortalProcess, person: Person, lang: str = "id") -> None:
    page.goto(f"{portal.base_url}/?lang={lang}")
    enter_code(page, portal, ask_code(page, portal, person, lang), lang)


def wave_section(page: Page, wave: int):
    return page.locator(f"section[aria-labelledby='wave-{wave}']")


def expect_outcome(page: Page, person: Person, lang: str) -> None:
    headline, next_step = OUTCOME_SAYS[(person.outcome, person.reason)][lang]
    first = wave_section(page, 1)
    expect(page.locator("html")).to_have_attribute("lang", lang)
    expect(first.locator(".outcome")).to_have_text(headline)
    expect(first).to_contain_text(next_step)
    expect(wave_section(page, 2).locator(".outcome")).to_have_text(SAY[lang]["not_announced"])


# --------------------------------------------------------------------------- tests
def test_a_credited_registrant_signs_in_through_the_pages(page, portal, registrants):
    person = registrants.take("CREDITED")
    page.goto(f"{portal.base_url}/")
    expect(page.locator("html")).to_have_attribute("lang", "id")
    shot(page, "signin")
    code = ask_code(page, portal, person)
    shot(page, "code")
    enter_code(page, portal, code)

    assert person.nik not in page.content(), "the full NIK is never shown"
    expect(page.locator(".who .mono")).to_have_text(person.nik[:4] + "*" * 10 + person.nik[-2:])
    first = wave_section(page, 1)
    expect(first.locator(".outcome")).to_have_text("Saldo sudah masuk")
    expect(first.locator(".balance")).to_have_text("Rp1.000.000")
    card = first.locator("dd.mono")
    expect(card).to_have_text(re.compile(r"^\*{4} \*{4} \*{4} \d{4}$"))
    # The same card the API gives this session (the page's cookie, through page.request).
    me = page.request.get(f"{portal.base_url}/api/me").json()
    assert card.inner_text() == me["waves"][0]["card_number_masked"]
    expect(first).to_contain_text("WIB")
    # The announcement's message is shown as text, never run as markup.
    expect(first.locator(".message p")).to_have_text(
        "Hasil gelombang 1 <script>alert('x')</script> & lainnya"
    )
    expect(wave_section(page, 2)).to_contain_text("sedang diverifikasi")
    expect(wave_section(page, 2).locator(".balance")).to_have_count(0)
    shot(page, "status-id")


@pytest.mark.parametrize("outcome", list(OUTCOME_SAYS), ids=lambda o: o[1] or o[0])
def test_the_status_page_in_both_languages(page, portal, registrants, outcome):
    person = registrants.take(*outcome)
    sign_in_page(page, portal, person)  # Bahasa Indonesia by default
    expect_outcome(page, person, "id")
    if person.outcome != "CREDITED":
        expect(page.locator(".balance")).to_have_count(0)

    switch = page.get_by_role("link", name=SAY["id"]["switch"])
    expect(switch).to_have_attribute("hreflang", "en")
    switch.click()
    expect(page).to_have_url(f"{portal.base_url}/status?lang=en")
    expect(page.get_by_role("heading", level=1)).to_have_text(SAY["en"]["status"])
    expect_outcome(page, person, "en")
    if person.outcome == "CREDITED":
        shot(page, "status-en")

    page.get_by_role("link", name=SAY["en"]["switch"]).click()
    expect(page).to_have_url(f"{portal.base_url}/status?lang=id")
    expect_outcome(page, person, "id")


def _fits(page: Page, width: int, what: str) -> None:
    scroll = page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll <= width, f"{what}: the page scrolls sideways ({scroll} px > {width} px)"
    buttons = page.get_by_role("button")
    assert buttons.count() > 0, f"{what}: no button"
    for i in range(buttons.count()):
        button = buttons.nth(i)
        button.scroll_into_view_if_needed()
        expect(button).to_be_visible()
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (
            f"{what}: button {button.inner_text()!r} is not wholly on screen: {box}"
        )


def _one_line(page: Page, selector: str) -> None:
    """The element's text takes one line (a rupiah amount broken in two misleads)."""
    lines = page.locator(selector).evaluate(
        "el => { const r = document.createRange(); r.selectNodeContents(el);"
        " return new Set([...r.getClientRects()].map(b => Math.round(b.top))).size; }"
    )
    assert lines == 1, f"{selector} ({page.locator(selector).inner_text()!r}) wraps: {lines} lines"


def test_a_360_pixel_phone_needs_no_sideways_scrolling(new_context, portal, registrants):
    # The credited registrant with the longest name: the widest status page there is.
    person = registrants.take("CREDITED", longest_name=True)
    context = new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=1)
    page = context.new_page()
    page.goto(f"{portal.base_url}/")
    _fits(page, PHONE["width"], "sign-in page")
    code = ask_code(page, portal, person)
    _fits(page, PHONE["width"], "code page")
    enter_code(page, portal, code)
    expect(page.locator(".balance")).to_have_text("Rp1.000.000")
    _fits(page, PHONE["width"], "status page (id)")
    _one_line(page, ".balance")
    _one_line(page, "dd.mono")
    shot(page, "status-360")
    page.get_by_role("link", name=SAY["id"]["switch"]).click()
    _fits(page, PHONE["width"], "status page (en)")
    _one_line(page, ".balance")
    shot(page, "status-360-en")


def _no_serious_findings(page: Page, what: str) -> None:
    results = Axe().run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    report = "\n".join(
        f"- {v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(" ".join(n["target"]) for n in v["nodes"])
        for v in bad
    )
    assert not bad, f"axe-core on the {what}: {len(bad)} serious/critical finding(s)\n{report}"


def test_no_serious_or_critical_axe_findings(new_context, portal, registrants):
    # axe is injected with page.evaluate, which goes through the DevTools protocol and is
    # not subject to the page's Content-Security-Policy: no bypass_csp needed.
    person = registrants.take("CREDITED")
    page = new_context().new_page()
    page.goto(f"{portal.base_url}/?lang=en")
    _no_serious_findings(page, "sign-in page (en)")
    page.goto(f"{portal.base_url}/")
    _no_serious_findings(page, "sign-in page (id)")
    code = ask_code(page, portal, person)
    _no_serious_findings(page, "code page")

    wrong = "000000" if code != "000000" else "111111"
    page.get_by_label(SAY["id"]["code"]).press_sequentially(wrong)
    page.get_by_role("button", name=SAY["id"]["verify"], exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text(SAY["id"]["bad_code"])
    _no_serious_findings(page, "code page with a wrong code")

    enter_code(page, portal, code)
    _no_serious_findings(page, "status page (id)")
    page.goto(f"{portal.base_url}/status?lang=en")
    _no_serious_findings(page, "status page (en)")


def test_logout_returns_to_sign_in_and_closes_the_status_page(page, portal, registrants):
    person = registrants.take("NOT_SELECTED", "QUOTA_FULL")
    sign_in_page(page, portal, person)
    page.get_by_role("button", name=SAY["id"]["logout"]).click()
    expect(page).to_have_url(f"{portal.base_url}/?lang=id")
    expect(page.get_by_role("heading", level=1)).to_have_text(SAY["id"]["signin"])
    assert page.request.get(f"{portal.base_url}/api/me").status == 401

    page.goto(f"{portal.base_url}/status")
    expect(page).to_have_url(f"{portal.base_url}/?lang=id")
    expect(page.get_by_label(SAY["id"]["nik"])).to_be_visible()
