"""The participant's side of the whole program, end to end (portal.md, "After the credit";
lifecycle.md): a small wave credited against the real simulator over HTTP and announced,
training lives scripted on the simulator's platforms, `python -m cli payout run` at as-of
dates weeks apart as an operator would run it, and `prakerja portal` as its own process
over the same database. What a participant asks the dashboard, asserted through
`/api/me`, the survey API and, on SQLite, the pages in a real Chromium (360 px, both
languages, axe-core):

- before the deadline: the day to buy a first training by, and the balance;
- after a first completed training: the first incentive paid, the others scheduled,
  survey 1 open; a survey answered once, then paid by the next payout run;
- an account closed at the payment partner: the installment FAILED, with what to do;
- past the deadline without a training: revoked, with the reason;
- listed by an agency after two incentives: the third stopped, with the reason.

The stages run in the order of the tests below (each test moves the shared world on to
the stage it needs; a stage is reached once).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.cli_process import run_cli
from tests.conftest import DATABASES, POSTGRES_URL
from tests.portal.conftest import PortalProcess, PortalWave, sign_in, start_portal, stop_portal

SEED = "portal-life-seed"
REGISTRANTS = 160
QUOTA = 12
REFERENCE = date(2026, 11, 28)
AUTH = {"Authorization": "Bearer simulator"}
COMMENT = "Pelatihannya <script>alert('x')</script> bagus & berguna"
GOOD = {
    "work_status": "own_business",
    "training_helped": 4,
    "field": "digital",
    "applied_for_job": True,
    "recommend": True,
    "comment": COMMENT,
}


def _pg_url(name: str) -> str:
    from sqlalchemy.engine import make_url

    base = make_url(POSTGRES_URL)
    admin = create_engine(base.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    url = base.set(database=f"{base.database}_{name}").render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {base.database}_{name}")
        conn.exec_driver_sql(f"CREATE DATABASE {base.database}_{name}")
    admin.dispose()
    return url


@dataclass
class Person:
    nik: str
    phone: str
    card: str
    registrant_id: int


@dataclass
class World:
    kind: str
    url: str
    env: dict[str, str]
    sim: object
    portal: PortalProcess
    day0: date
    people: dict[str, Person]
    stage: int = 0
    sessions: dict[str, requests.Session] = field(default_factory=dict)

    def cli(self, *args: str, check: int | None = 0):
        result = run_cli(list(args), env=self.env, timeout=600)
        if check is not None:
            assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
        return result

    def payout(self, day: int) -> dict:
        on = self.day0 + timedelta(days=day)
        r = requests.post(
            f"{self.sim.base_url}/_admin/clock",  # type: ignore[attr-defined]
            json={"now": datetime.combine(on, time(12)).isoformat() + "+07:00"},
            headers=AUTH,
            timeout=10,
        )
        assert r.status_code == 200, r.text
        out = json.loads(self.cli("payout", "run", "--as-of", on.isoformat(), "--json").stdout)
        assert out["report"]["conservation_ok"], out["report"]
        return out

    def admin(self, route: str, body: dict) -> None:
        r = requests.post(
            f"{self.sim.base_url}{route}",  # type: ignore[attr-defined]
            json=body,
            headers=AUTH,
            timeout=10,
        )
        assert r.status_code == 200, r.text

    def session(self, who: str) -> requests.Session:
        """One signed-in session per person for the whole module (the sign-in limits
        allow a NIK a few codes a quarter hour)."""
        if who not in self.sessions:
            p = self.people[who]
            self.sessions[who] = sign_in(self.portal, p.nik, p.phone)
        return self.sessions[who]

    def me(self, who: str) -> dict:
        r = self.session(who).get(f"{self.portal.base_url}/api/me", timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        [wave] = r.json()["waves"]
        return wave

    def reach(self, stage: int) -> None:
        """Moves the program on to `stage` (never back): the payout runs and what the
        partners say in between."""
        while self.stage < stage:
            self.stage += 1
            STAGES[self.stage](self)


def _stage_first_installment(w: World) -> None:
    # B, D, S and E buy and complete a first training on day 1-2; A buys nothing.
    events = []
    for i, who in enumerate(("B", "D", "S", "E")):
        card = w.people[who].card
        events += [
            {"event_id": f"p-{i}", "type": "PURCHASED", "card_number": card,
             "course_id": f"c{i}", "price": 350_000,
             "at": datetime.combine(w.day0 + timedelta(days=1), time(10)).isoformat() + "+07:00"},
            {"event_id": f"c-{i}", "type": "COMPLETED", "card_number": card,
             "course_id": f"c{i}",
             "at": datetime.combine(w.day0 + timedelta(days=2), time(15)).isoformat() + "+07:00"},
        ]  # fmt: skip
    w.admin("/_admin/training/events", {"platform": "marketplace-a", "events": events})
    # E's account is closed at its payment partner before the first installment.
    e = _registrant(w.url, w.people["E"].registrant_id)
    w.admin(
        f"/_admin/payment/{e['payout_provider']}/fail",
        {"account": e["payout_account"], "reason": "ACCOUNT_CLOSED"},
    )
    w.payout(5)


def _stage_survey_paid(w: World) -> None:
    w.payout(6)


def _stage_revoked_and_stopped(w: World) -> None:
    w.payout(35)  # A's deadline (day 30) has passed; installment 2 (day 32) is paid
    w.admin("/_admin/agencies/civil-service/list", {"nik": w.people["D"].nik})
    w.payout(65)  # installment 3 (day 62): D is listed now


STAGES = {1: _stage_first_installment, 2: _stage_survey_paid, 3: _stage_revoked_and_stopped}


def _registrant(url: str, registrant_id: int) -> dict:
    engine = create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT * FROM registrant WHERE id = :i"), {"i": registrant_id}
        ).mappings()
        out = dict(row.one())
    engine.dispose()
    return out


@pytest.fixture(scope="module", params=DATABASES)
def world(request, prefect_server, tmp_path_factory):
    from prefect.settings import PREFECT_API_URL

    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorThread
    from rules.lifecycle import wib_date
    from tests.crash.conftest import partners_file

    work = tmp_path_factory.mktemp(f"portal-life-{request.param}")
    url = f"sqlite:///{work}/prakerja.db" if request.param == "sqlite" else _pg_url("life")
    with SimulatorThread(SEED, lives="none") as sim:
        quick = {"retry_attempts": 2, "retry_total_s": 2, "retry_backoff_s": 0.05}
        partners = partners_file(
            work / "partners.toml",
            sim.base_url,
            {n: quick for n in ("registry", "agencies", "payment_providers", "card_issuer")},
        )
        env = dict(os.environ)
        env.update(
            PRAKERJA_DATABASE_URL=url,
            PREFECT_API_URL=str(PREFECT_API_URL.value()),
            PRAKERJA_PARTNERS=str(partners),
            PRAKERJA_WORKERS="1",
            PRAKERJA_SIMULATOR_API_KEY="simulator",
        )
        export = work / "wave1.csv"
        generate_export(export, registrants=REGISTRANTS, seed=SEED, reference_date=REFERENCE)
        first = run_cli(
            ["wave", "run", "--wave", "1", "--registrants", str(export), "--quota", str(QUOTA),
             "--lottery-seed", "life-lottery", "--reference-date", REFERENCE.isoformat()],
            env=env, timeout=600,
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        announced = run_cli(["wave", "announce", "--wave", "1"], env=env, timeout=120)
        assert announced.returncode == 0, announced.stderr
        engine = create_engine(url)
        with engine.connect() as conn:
            rows = (
                conn.execute(
                    text(
                        "SELECT id, nik, phone, card_number, credited_at FROM registrant "
                        "WHERE state = 'CREDITED' AND phone IS NOT NULL ORDER BY id"
                    )
                )
                .mappings()
                .all()
            )
        engine.dispose()
        assert len(rows) >= 5
        credited_at = rows[0]["credited_at"]
        if isinstance(credited_at, str):
            credited_at = datetime.fromisoformat(credited_at)
        people = {
            who: Person(r["nik"], r["phone"], r["card_number"], r["id"])
            for who, r in zip(("A", "B", "D", "S", "E"), rows, strict=False)
        }
        pw = PortalWave(url, work, sim.base_url, partners, export, None)
        portal = start_portal(pw, workers=1, extra_env={"PREFECT_API_URL": env["PREFECT_API_URL"]})
        w = World(request.param, url, env, sim, portal, wib_date(credited_at), people)
        try:
            yield w
        finally:
            stop_portal(portal)


def _payments(wave: dict) -> list[tuple]:
    return [
        (p["benefit"], p["installment"], p["status"], p.get("reason"))
        for p in wave["lifecycle"]["payments"]
    ]


# ------------------------------------------------------------------ the pages
# In a real Chromium (Debian's), on SQLite only: the pages read what /api/me reads, and
# the API tests above and below run on both databases. Each page is opened with the
# person's API session cookie (the sign-in pages have their own tests: test_browser.py).
def _browser_ready():
    from pathlib import Path as _P

    return _P("/usr/bin/chromium").exists()


browser_only = pytest.mark.skipif(not _browser_ready(), reason="Debian's Chromium is missing")
PHONE = {"width": 360, "height": 740}
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@pytest.fixture(scope="module")
def chromium(world):
    if world.kind != "sqlite":
        pytest.skip("the pages are checked once, on SQLite")
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from tests.portal.test_browser import CHROMIUM_ARGS

    # Playwright for this module only, after the world's waves (see test_browser.py).
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _page(chromium, world: World, who: str, path: str):
    """A 360-px phone page opened as `who` (their session's cookie)."""
    context = chromium.new_context(
        viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=1
    )
    token = world.session(who).cookies.get("prakerja_session")
    context.add_cookies(
        [
            {
                "name": "prakerja_session",
                "value": token,
                "url": world.portal.base_url,
                "httpOnly": True,
                "sameSite": "Strict",
            }
        ]  # fmt: skip
    )
    page = context.new_page()
    page.goto(f"{world.portal.base_url}{path}")
    return page


def _check_page(page, what: str) -> None:
    """No sideways scrolling at 360 px; no serious or critical axe-core finding; a shot."""
    from tests.portal.test_browser import _no_serious_findings

    scroll = page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll <= PHONE["width"], f"{what}: the page scrolls sideways ({scroll} px)"
    _no_serious_findings(page, what)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"life-{what}.png"), full_page=True)


def _life(page):
    return page.locator("section[aria-labelledby='wave-1'] .life")


# ------------------------------------------------------------------ in order
def test_before_the_deadline_and_after_a_first_installment(world):
    world.reach(1)
    d0 = world.day0
    a = world.me("A")
    assert a["outcome"] == "CREDITED" and a["balance"] == 1_000_000
    assert a["lifecycle"] == {
        "state": "AWAITING_TRAINING",
        "reason": "",
        "training_deadline": (d0 + timedelta(days=30)).isoformat(),
        "balance_left": 1_000_000,
        "payments": [],
        "surveys": [{"survey": k, "status": "LOCKED"} for k in (1, 2, 3)],
    }
    b = world.me("B")
    life = b["lifecycle"]
    assert life["state"] == "TRAINED" and life["reason"] == ""
    assert life["balance_left"] == 650_000  # Rp1,000,000 less the course bought
    first, *rest = life["payments"]
    assert first["benefit"] == "incentive" and first["installment"] == 1
    assert first["amount"] == 600_000 and first["status"] == "PAID"
    assert first["due"] == (d0 + timedelta(days=2)).isoformat()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+07:00", first["paid_at"])
    assert first["paid_at"] >= first["due"]
    assert [(p["installment"], p["status"], p["due"]) for p in rest] == [
        (k, "SCHEDULED", (d0 + timedelta(days=2 + 30 * (k - 1))).isoformat()) for k in (2, 3, 4)
    ]
    assert life["surveys"] == [
        {"survey": 1, "status": "OPEN"},
        {"survey": 2, "status": "LOCKED"},
        {"survey": 3, "status": "LOCKED"},
    ]
    # The account closed at the partner: FAILED, final for that installment.
    e = world.me("E")["lifecycle"]
    assert _payments({"lifecycle": e})[0] == ("incentive", 1, "FAILED", "ACCOUNT_CLOSED")
    assert e["surveys"][0]["status"] == "LOCKED"


@browser_only
def test_the_page_before_the_deadline_in_both_languages(world, chromium):
    from playwright.sync_api import expect

    world.reach(1)
    deadline = world.day0 + timedelta(days=30)
    left = (deadline - _today_wib()).days
    months = {"id": "Januari Februari Maret April Mei Juni Juli Agustus September Oktober "
                    "November Desember", "en": "January February March April May June July "
                    "August September October November December"}  # fmt: skip
    for lang, headline, days in (
        ("id", "Menunggu pelatihan pertama", f"{left} hari lagi"),
        ("en", "Waiting for your first training", f"{left} days left"),
    ):
        page = _page(chromium, world, "A", f"/status?lang={lang}")
        life = _life(page)
        expect(life.locator(".life-outcome")).to_have_text(headline)
        month = months[lang].split()[deadline.month - 1]
        expect(life.locator(".deadline")).to_contain_text(f"{deadline.day} {month} {deadline.year}")
        expect(life.locator(".deadline")).to_contain_text(days)
        expect(life.locator(".balance-left")).to_have_text("Rp1.000.000")
        _check_page(page, f"awaiting-{lang}")
        page.context.close()


@browser_only
def test_a_survey_filled_in_on_the_page_then_answered(world, chromium):
    from playwright.sync_api import expect

    world.reach(1)
    page = _page(chromium, world, "S", "/status?lang=en")
    life = _life(page)
    expect(life.locator(".payment-PAID")).to_contain_text("Incentive 1")
    expect(life.locator(".payment-PAID")).to_contain_text("Rp600.000")
    _check_page(page, "trained-en")
    life.get_by_role("link", name="Answer survey 1").click()
    expect(page).to_have_url(f"{world.portal.base_url}/survey/1?lang=en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Survey 1")
    _check_page(page, "survey-en")
    # Sent without an answer to every question, the browser keeps it (required fields);
    # with them, the server stores it.
    page.get_by_role("radio", name="Own business").check()
    page.get_by_role("radio", name="4", exact=True).check()
    page.get_by_role("group", name="The field of your training").get_by_role(
        "radio", name="Digital"
    ).check()
    page.get_by_role("group", name="Have you applied for a job since the training?").get_by_role(
        "radio", name="Yes"
    ).check()
    page.get_by_role("group", name="Would you recommend the program to others?").get_by_role(
        "radio", name="No"
    ).check()
    page.get_by_label("Comment (optional, at most 500 characters)").fill(COMMENT)
    page.get_by_role("button", name="Send answers").click()
    expect(page.get_by_role("status")).to_contain_text("Thank you")
    assert "bagus" not in page.url and "own_business" not in page.url
    _check_page(page, "survey-answered-en")
    page.goto(f"{world.portal.base_url}/status?lang=id")
    expect(_life(page).locator(".survey-ANSWERED")).to_contain_text("Sudah diisi")
    # The same survey again: a plain message, nothing stored twice.
    page.goto(f"{world.portal.base_url}/survey/1?lang=id")
    expect(page.get_by_role("status")).to_contain_text("sudah Anda isi")
    page.context.close()


def test_a_survey_is_answered_once_with_its_fixed_choices_then_paid(world):
    world.reach(1)
    base = world.portal.base_url
    s = world.session("B")
    # Not signed in: nothing. Another site's page: refused.
    assert requests.post(f"{base}/api/surveys/1", json=GOOD, timeout=10).status_code == 401
    r = s.post(f"{base}/api/surveys/1", json=GOOD, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    # Outside the choices: 422 and nothing stored; a survey not open: 404.
    no_recommend = {k: v for k, v in GOOD.items() if k != "recommend"}
    too_long = {**GOOD, "comment": "x" * 501}
    for bad in ({**GOOD, "training_helped": 6}, {**GOOD, "field": "law"}, too_long, no_recommend):
        r = s.post(f"{base}/api/surveys/1", json=bad, timeout=10)
        assert (r.status_code, r.json()) == (422, {"error": "invalid_answer"}), bad
    assert s.post(f"{base}/api/surveys/2", json=GOOD, timeout=10).status_code == 404
    assert s.post(f"{base}/api/surveys/0", json=GOOD, timeout=10).status_code == 404
    assert world.me("B")["lifecycle"]["surveys"][0]["status"] == "OPEN"

    r = s.post(f"{base}/api/surveys/1", json=GOOD, timeout=10)
    assert (r.status_code, r.json()) == (201, {"status": "answered"})
    r = s.post(f"{base}/api/surveys/1", json={**GOOD, "recommend": False}, timeout=10)
    assert (r.status_code, r.json()) == (409, {"error": "already_answered"})
    life = world.me("B")["lifecycle"]
    assert life["surveys"][0] == {"survey": 1, "status": "ANSWERED"}
    assert ("survey", 1, "DUE", None) in _payments({"lifecycle": life})

    # The next payout run pays it, once.
    world.reach(2)
    life = world.me("B")["lifecycle"]
    assert life["surveys"][0] == {"survey": 1, "status": "PAID"}
    [paid] = [p for p in life["payments"] if p["benefit"] == "survey"]
    assert paid["amount"] == 50_000 and paid["status"] == "PAID" and paid["installment"] == 1

    # The report gives counts and the fixed choices' distribution, never the free text.
    out = world.cli("payout", "report", "--json").stdout
    surveys = json.loads(out)["surveys"]
    assert surveys["answered"]["1"] >= 1 and surveys["with_comment"] >= 1
    assert surveys["choices"]["work_status"]["own_business"] >= 1
    assert surveys["choices"]["training_helped"]["4"] >= 1
    assert "alert" not in out and "bagus" not in out
    text_report = world.cli("payout", "report").stdout
    assert "bagus" not in text_report and "work_status" in text_report
    # Answers are personal data: never in the dashboard's log.
    assert "bagus" not in world.portal.log() and "own_business" not in world.portal.log()


@browser_only
def test_the_survey_answered_on_the_page_is_paid_by_the_next_run(world, chromium):
    from playwright.sync_api import expect

    world.reach(2)
    page = _page(chromium, world, "S", "/status?lang=id")
    life = _life(page)
    expect(life.locator(".survey-PAID")).to_contain_text("Sudah diisi dan dibayar")
    expect(life.locator(".payment-PAID").filter(has_text="Survei ke-1")).to_contain_text("Rp50.000")
    _check_page(page, "survey-paid-id")
    page.context.close()


def test_revoked_past_the_deadline_and_stopped_after_two_incentives(world):
    world.reach(3)
    a = world.me("A")["lifecycle"]
    assert (a["state"], a["reason"]) == ("REVOKED", "NO_TRAINING_IN_TIME")
    assert a["payments"] == [] and {s["status"] for s in a["surveys"]} == {"LOCKED"}
    d = world.me("D")["lifecycle"]
    assert (d["state"], d["reason"]) == ("STOPPED", "EXCLUDED_CIVIL_SERVANT")
    assert _payments({"lifecycle": d}) == [
        ("incentive", 1, "PAID", None),
        ("incentive", 2, "PAID", None),
        ("incentive", 3, "STOPPED", "EXCLUDED_CIVIL_SERVANT"),
        ("incentive", 4, "STOPPED", "EXCLUDED_CIVIL_SERVANT"),
    ]
    assert {s["status"] for s in d["surveys"]} == {"LOCKED"}  # nothing more is paid


@browser_only
@pytest.mark.parametrize("lang", ["id", "en"])
def test_the_pages_of_the_revoked_and_the_stopped(world, chromium, lang):
    from playwright.sync_api import expect

    world.reach(3)
    page = _page(chromium, world, "A", f"/status?lang={lang}")
    life = _life(page)
    expect(life.locator(".life-outcome")).to_have_text(
        {"id": "Kartu dicabut", "en": "Card revoked"}[lang]
    )
    expect(life).to_contain_text(
        {"id": "tidak membeli pelatihan pertama", "en": "bought no first training"}[lang]
    )
    expect(life.locator(".payment")).to_have_count(0)
    expect(life.locator(".deadline")).to_contain_text(
        {"id": "batas waktu sudah lewat", "en": "the deadline has passed"}[lang]
    )
    _check_page(page, f"revoked-{lang}")
    page.context.close()

    page = _page(chromium, world, "D", f"/status?lang={lang}")
    life = _life(page)
    expect(life.locator(".life-outcome")).to_have_text(
        {"id": "Pembayaran dihentikan", "en": "Payments stopped"}[lang]
    )
    expect(life.locator(".payment-PAID")).to_have_count(2)
    expect(life.locator(".deadline")).to_contain_text({"id": "sudah terpenuhi", "en": "done"}[lang])
    stopped = life.locator(".payment-STOPPED").first
    expect(stopped).to_contain_text({"id": "Insentif ke-3", "en": "Incentive 3"}[lang])
    expect(stopped).to_contain_text({"id": "Dihentikan", "en": "Stopped"}[lang])
    expect(stopped).to_contain_text(
        {"id": "terdata sebagai ASN", "en": "listed as a civil servant"}[lang]
    )
    expect(stopped).to_contain_text(
        {"id": "hubungi layanan pengaduan", "en": "contact the help desk"}[lang]
    )
    _check_page(page, f"stopped-{lang}")
    page.context.close()

    page = _page(chromium, world, "E", f"/status?lang={lang}")
    failed = _life(page).locator(".payment-FAILED").first
    expect(failed).to_contain_text({"id": "Gagal dikirim", "en": "Failed"}[lang])
    expect(failed).to_contain_text({"id": "sudah ditutup", "en": "is closed"}[lang])
    _check_page(page, f"failed-{lang}")
    page.context.close()


def _today_wib() -> date:
    from portal.lifecycle import today_wib

    return today_wib()
