"""Codes reach the gateway in batches and quickly; a failing gateway or database never
shows in the answer to the person asking, and never puts personal data in the log.

A small wave of its own (intake only, then announced), the simulator on a thread, and
`prakerja portal` as its own process over real HTTP.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
import requests

from models.tables import Wave
from tasks.intake import import_export
from tasks.portal_index import announce_wave
from tests.portal.conftest import PortalWave, partners_file, start_portal, stop_portal
from tests.tasks.factories import make_wave, person, write_export

PEOPLE = 80


@pytest.fixture
def small_wave(sessions, database_url, tmp_path):
    from partners.simulator.server import SimulatorThread

    make_wave(sessions)
    rows = [person(i) for i in range(1, PEOPLE + 1)]
    export = write_export(tmp_path / "w.csv", rows)
    import_export(sessions, 1, export)
    with sessions() as session, session.begin():
        session.get(Wave, 1).drawn_at = datetime(2026, 11, 28, 12, 0)
    announce_wave(sessions, 1, None)
    with SimulatorThread("gateway-seed") as sim:
        pw = PortalWave(
            database_url, tmp_path, sim.base_url, partners_file(tmp_path, sim.base_url), export,
            sessions,
        )  # fmt: skip
        yield pw, rows


def _stats(sim_url: str) -> dict:
    return requests.get(f"{sim_url}/_admin/stats", timeout=5).json()


def test_codes_go_out_in_batches_each_within_a_second(small_wave):
    pw, rows = small_wave
    portal = start_portal(pw)
    try:
        before = _stats(pw.sim_url)["calls"].get("notifier", 0)
        after_seq = portal.latest_code_seq()

        def ask(row):
            started = time.time()
            r = requests.post(f"{portal.base_url}/api/login", json={"nik": row["nik"]}, timeout=10)
            return r.status_code, started

        with ThreadPoolExecutor(16) as pool:
            asked = list(pool.map(ask, rows))
        assert {status for status, _ in asked} == {202}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = portal.codes_sent_after(after_seq)
            if len(got) >= len(rows):
                break
            time.sleep(0.05)
        by_phone = {m["to"]: m for m in got}
        assert set(by_phone) == {r["phone"] for r in rows}
        waits = [
            by_phone[r["phone"]]["at"] - started
            for r, (_, started) in zip(rows, asked, strict=True)
        ]
        assert max(waits) < 1.0, f"slowest code left after {max(waits):.2f} s"
        calls = _stats(pw.sim_url)["calls"]["notifier"] - before
        assert calls < len(rows) / 3, f"{calls} gateway calls for {len(rows)} codes"
    finally:
        stop_portal(portal)
    log = portal.log()
    assert not any(r["nik"] in log or r["phone"] in log for r in rows)


def test_a_failing_gateway_still_answers_202_and_logs_no_personal_data(small_wave):
    pw, rows = small_wave
    requests.post(
        f"{pw.sim_url}/_admin/faults", json={"partners": {"notifier": {"down": True}}}, timeout=5
    ).raise_for_status()
    # Few retries, so the failure is logged while the test waits.
    text = pw.partners.read_text().replace(
        "[notifier]\n", "[notifier]\nretry_attempts = 2\nretry_total_s = 2\n", 1
    )
    pw.partners.write_text(text)
    portal = start_portal(pw, workers=1)
    try:
        started = time.monotonic()
        r = requests.post(f"{portal.base_url}/api/login", json={"nik": rows[0]["nik"]}, timeout=10)
        assert r.status_code == 202 and r.json() == {"status": "code_sent"}
        assert time.monotonic() - started < 1.0
        deadline = time.monotonic() + 15
        while "not sent" not in portal.log() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop_portal(portal)
    log = portal.log()
    assert "login codes: 1 of 1 not sent: notifier" in log
    assert rows[0]["nik"] not in log and rows[0]["phone"] not in log


def test_a_database_failure_answers_500_and_logs_only_what_failed(small_wave):
    pw, rows = small_wave
    portal = start_portal(pw, workers=1)
    try:
        s = requests.Session()
        after = portal.latest_code_seq()
        s.post(f"{portal.base_url}/api/login", json={"nik": rows[1]["nik"]}, timeout=10)
        code = portal.code_sent_to(rows[1]["phone"], after)
        r = s.post(
            f"{portal.base_url}/api/login/verify",
            json={"nik": rows[1]["nik"], "code": code},
            timeout=10,
        )
        assert r.status_code == 200
        from sqlalchemy import create_engine, text

        engine = create_engine(pw.database_url)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE portal_person RENAME TO portal_person_gone"))
        try:
            r = s.get(f"{portal.base_url}/api/me", timeout=10)
            assert r.status_code == 500 and r.json() == {"error": "internal_error"}
            assert r.headers["cache-control"] == "no-store"
            assert "nosniff" in r.headers["x-content-type-options"]
        finally:
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE portal_person_gone RENAME TO portal_person"))
            engine.dispose()
        assert s.get(f"{portal.base_url}/api/me", timeout=10).status_code == 200
    finally:
        stop_portal(portal)
    log = portal.log()
    assert "portal: " in log and "on GET /api/me" in log
    assert "Traceback" not in log
    assert rows[1]["nik"] not in log and rows[1]["phone"] not in log


def test_off_loopback_the_portal_needs_a_secret_of_32_characters(small_wave):
    import subprocess
    import sys

    from tests.portal.conftest import ROOT

    pw, _rows = small_wave
    for secret in (None, "too-short"):
        env = pw.env()
        env.pop("PRAKERJA_PORTAL_SECRET")
        if secret:
            env["PRAKERJA_PORTAL_SECRET"] = secret
        r = subprocess.run(
            [sys.executable, "-m", "cli", "portal", "--host", "0.0.0.0", "--port", "1"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2, r.stderr
        assert "PRAKERJA_PORTAL_SECRET" in r.stderr and "32" in r.stderr


def test_on_loopback_the_secret_made_at_start_is_shared_by_every_worker(small_wave):
    """A code asked for on one worker verifies on another: they hash NIKs and codes alike."""
    import subprocess
    import sys

    from tests.portal.conftest import ROOT, PortalProcess, free_port

    pw, rows = small_wave
    env = pw.env()
    env.pop("PRAKERJA_PORTAL_SECRET")
    port = free_port()
    log_path = pw.folder / "portal-own-secret.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "portal", "--port", str(port), "--workers", "3"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    portal = PortalProcess(f"http://127.0.0.1:{port}", pw.sim_url, process, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{portal.base_url}/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and process.poll() is None, portal.log()
            time.sleep(0.2)
        time.sleep(1.5)  # every worker up
        signed_in = 0
        for row in rows[10:16]:  # fresh connections: the requests spread over the workers
            after = portal.latest_code_seq()
            close = {"Connection": "close"}
            r = requests.post(
                f"{portal.base_url}/api/login", json={"nik": row["nik"]}, headers=close, timeout=10
            )
            assert r.status_code == 202
            code = portal.code_sent_to(row["phone"], after)
            r = requests.post(
                f"{portal.base_url}/api/login/verify",
                json={"nik": row["nik"], "code": code},
                headers=close,
                timeout=10,
            )
            signed_in += r.status_code == 200
        assert signed_in == 6
    finally:
        process.terminate()
        process.wait(10)
