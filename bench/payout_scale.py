"""Payout-run benchmark: one payout run over N credited participants, under Prefect.

Starts the partner simulator (seeded card lives) as its own process, writes a program
database with one wave and N registrants already CREDITED (bulk inserts, no wave run),
credits their cards at the simulator's issuer with its clock at D0, moves the clock to
D0 + 40 days (most lives have bought and completed a first training: about two events a
card; those who never bought are past their deadline; first installments are due), then
times one payout run for that date exactly as `prakerja payout run` starts it
(services.payouts.start_payout_run with flows.payout.run_payout_flow), and prints one
JSON line.

    .venv/bin/python bench/payout_scale.py --participants 1000000

Stated conditions (as bench/wave_scale.py's): every partner answers after 50 ms and
admits MAX_RPS calls a second (429 above it); the program's clients pace themselves to
the same limits. Setup runs the simulator without latency or limits; the bench's
conditions are set just before the timed run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# D0: the moment every card is credited (UTC, naive as the program stores it): 10:00 WIB,
# so that the few minutes the issuer takes to credit a million cards stay on one WIB date.
D0 = datetime(2026, 1, 5, 3, 0, 0)
DAYS_AFTER = 40
WIB = timedelta(hours=7)
LATENCY_MS = 50
MAX_RPS = {
    "registry": 40.0,
    "agency": 40.0,
    "payment": 20.0,
    "card-issuer": 20.0,
    "notifier": 20.0,
    "training": 50.0,  # the code's default (partners/config.py PartnerSettings.max_rps)
}
TRAINING_BALANCE = 1_000_000
CHUNK = 20_000  # registrants per insert (and per round of credits at the issuer)
CREDIT_BATCH = 1000
# Of the credited, this share has come onto an agency's list since the wave (the re-check
# should stop them: "a few percent"), and this share has since died (the registry says).
LISTED_SINCE_SHARE = 0.03
DECEASED_SINCE_SHARE = 0.002
AUTH = {"Authorization": "Bearer simulator"}


def partner_settings(root_url: str):
    from partners.config import PartnersConfig, simulator_config

    base = simulator_config(root_url)
    return PartnersConfig(
        registry=replace(base.registry, max_rps=MAX_RPS["registry"]),
        agencies=tuple(replace(a, max_rps=MAX_RPS["agency"]) for a in base.agencies),
        payment_providers={
            k: replace(p, max_rps=MAX_RPS["payment"]) for k, p in base.payment_providers.items()
        },
        card_issuer=replace(base.card_issuer, max_rps=MAX_RPS["card-issuer"]),
        notifier=replace(base.notifier, max_rps=MAX_RPS["notifier"]),
        source=base.source,
        training_platforms=tuple(
            replace(t, max_rps=MAX_RPS["training"]) for t in base.training_platforms
        ),
    )


def kind_of(config, partner_id: str) -> str:
    if partner_id == config.registry.id:
        return "registry"
    if partner_id in {a.id for a in config.agencies}:
        return "agency"
    if partner_id in config.payment_providers:
        return "payment"
    if partner_id in {t.id for t in config.training_platforms}:
        return "training"
    return partner_id  # card-issuer, notifier


def bench_faults(config) -> dict:
    """The simulator's faults for the timed run: latency and each partner's max_rps."""
    return {
        "seed": "bench",
        "default": {"latency_ms": LATENCY_MS},
        "partners": {
            p.id: {"latency_ms": LATENCY_MS, "max_rps": p.max_rps} for p in config.every()
        },
    }


# ---------------------------------------------------------------- the credited people
class People:
    """N people the partners would have let through a wave (registry OK, on no agency's
    list, account verified, credit accepted), but for a few listed or deceased since.
    NIKs are generate.py's shape: place (PPRRDD), birth date code (DDMMYY, +40 for
    women), serial."""

    def __init__(self, seed: str) -> None:
        from partners.simulator.generate import FIRST_NAMES, LAST_NAMES, PLACES, SERIALS
        from partners.simulator.truth import PAYMENT_PROVIDERS

        self.seed = seed
        self.rng = random.Random(f"{seed}|payout-bench")
        self.places, self.serials = PLACES, SERIALS
        self.names = [f"{f} {last}" for f in FIRST_NAMES for last in LAST_NAMES]
        self.providers = PAYMENT_PROVIDERS
        self.counter = 0
        self.kk = 0
        self.listed_since = self.deceased_since = 0

    def _nik_place(self) -> tuple[str, str]:
        from partners.simulator.generate import DISTRICTS, N_PROVINCES, REGENCIES

        i = self.counter
        self.counter += 1
        rest, province = divmod(i, N_PROVINCES)
        rest, regency = divmod(rest, REGENCIES)
        serial, district = divmod(rest, DISTRICTS)
        return self.places[province][regency][district], self.serials[serial]

    def person(self, serial: int) -> dict:
        from partners.simulator.truth import person_truth

        rand = self.rng.random
        u = rand()
        want = "listed" if u < LISTED_SINCE_SHARE else "ok"
        if LISTED_SINCE_SHARE <= u < LISTED_SINCE_SHARE + DECEASED_SINCE_SHARE:
            want = "deceased"
        birth = date(1966, 1, 1) + timedelta(days=int(rand() * 14_600))
        female = rand() < 0.5
        code = f"{birth.day + (40 if female else 0):02d}{birth.month:02d}{birth.year % 100:02d}"
        while True:
            place, serial4 = self._nik_place()
            nik = place + code + serial4
            t = person_truth(self.seed, nik)
            if t.account_status != "VERIFIED" or t.credit_rejected:
                continue
            if want == "ok" and t.registry_fate == "OK" and t.excluded_category is None:
                break
            if want == "listed" and t.registry_fate == "OK" and t.excluded_category is not None:
                self.listed_since += 1
                break
            if want == "deceased" and t.registry_fate == "DECEASED":
                self.deceased_since += 1
                break
        self.kk += 1
        provider = self.providers[int(rand() * len(self.providers))]
        phone = "+628" + str(10**10 + int(rand() * 10**10))[1:]
        if provider.startswith("wallet"):
            account = "0" + phone[3:]
        else:
            account = str(10**10 + int(rand() * 10**10))[1:]
        return {
            "nik": nik,
            "kk_number": f"{place}{self.kk:010d}",
            "full_name": self.names[int(rand() * len(self.names))],
            "birth_date": birth,
            "gender": "F" if female else "M",
            "phone": phone,
            "payout_provider": provider,
            "payout_account": account,
        }


def registrant_rows(people: People, first: int, count: int) -> list[dict]:
    from models.enums import State
    from rules.money import card_number_for

    registered = D0 - timedelta(days=20)
    rows = []
    for serial in range(first, first + count):
        p = people.person(serial)
        rows.append(
            {
                "id": serial,
                "wave_id": 1,
                "line": serial,
                "registration_id": f"REG-{serial:09d}",
                **p,
                "email": f"p{serial}@mail.example.id",
                "email_verified": True,
                "domicile_regency_code": p["kk_number"][:4],
                "province": p["kk_number"][:2],
                "test_score": 80,
                "registered_at": registered,
                "state": State.CREDITED.value,
                "reason": None,
                "priority": False,
                "draw_round": 0,
                "drawn_at": D0 - timedelta(days=2),
                "account_status": "VERIFIED",
                "account_at": D0 - timedelta(days=1),
                "card_number": card_number_for(serial),
                "confirmed_at": D0 - timedelta(days=1),
                "credited_at": D0,
                "decided_at": D0,
            }
        )
    return rows


def insert_wave(rt, n: int) -> None:
    from models.tables import Wave

    with rt.sessions() as session, session.begin():
        session.add(
            Wave(
                wave_id=1,
                quota=n,
                reference_date=(D0 - timedelta(days=10)).date(),
                lottery_seed="bench",
                lottery_seed_sha256=hashlib.sha256(b"bench").hexdigest(),
                training_balance=TRAINING_BALANCE,
                rollout_deadline=D0 + timedelta(days=1),
                status="CLOSED",
                created_at=D0 - timedelta(days=30),
                closed_at=D0 + timedelta(hours=1),
                intake_done=True,
                intake_rows=n,
                drawn_at=D0 - timedelta(days=2),
            )
        )


class Issuer:
    """Credits cards at the simulator's issuer, several calls at a time."""

    def __init__(self, base_url: str, threads: int = 4) -> None:
        self.url = f"{base_url}/issuer/v1/credits"
        self.pool = ThreadPoolExecutor(threads)
        self.local = threading.local()
        self.futures: list = []

    def _call(self, credits: list[dict]) -> dict[str, int]:
        import requests

        s = getattr(self.local, "s", None)
        if s is None:
            s = self.local.s = requests.Session()
        for attempt in range(5):
            r = s.post(self.url, json={"credits": credits}, headers=AUTH, timeout=120)
            if r.ok:
                break
            time.sleep(0.5 * (attempt + 1))
        r.raise_for_status()
        got: dict[str, int] = {}
        for result in r.json()["results"]:
            got[result["status"]] = got.get(result["status"], 0) + 1
        return got

    def credit(self, rows: list[dict]) -> None:
        credits = [
            {
                "idempotency_key": f"w1:{r['nik']}:training",
                "card_number": r["card_number"],
                "nik": r["nik"],
                "amount": TRAINING_BALANCE,
                "currency": "IDR",
                "reference": "wave-1/training",
            }
            for r in rows
        ]
        for i in range(0, len(credits), CREDIT_BATCH):
            self.futures.append(self.pool.submit(self._call, credits[i : i + CREDIT_BATCH]))

    def wait(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for f in self.futures:
            for k, v in f.result().items():
                total[k] = total.get(k, 0) + v
        self.pool.shutdown()
        return total


def admin(sim, path: str, body: dict | None = None) -> dict:
    import requests

    url = f"{sim.base_url}/_admin/{path}"
    r = requests.post(url, json=body, timeout=600) if body is not None else None
    if r is None:
        r = requests.get(url, timeout=600)
    r.raise_for_status()
    return r.json()


def wib_iso(moment: datetime) -> str:
    """A naive UTC moment as ISO 8601 at +07:00 (what the simulator's clock takes)."""
    return moment.replace(tzinfo=UTC).astimezone(timezone(WIB)).isoformat()


# ---------------------------------------------------------------- measurements
class Steps:
    """Wraps tasks.payout's step functions (as the flow's tasks call them) to time each:
    wall seconds from its first call's start to its last call's end (read_feed runs once
    per platform, side by side), and the SQL / partner / rate-wait thread-seconds and CPU
    seconds of this process over that span (runtime/timing.py)."""

    NAMES = (
        "enroll",
        "read_feed",
        "derive_training",
        "revoke",
        "make_due",
        "recheck",
        "disburse",
        "complete_participants",
        "reconcile",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: dict[str, int] = {}
        self.started: dict[str, tuple[float, dict]] = {}
        self.done: dict[str, dict] = {}

    @staticmethod
    def _now() -> dict[str, float]:
        from runtime import timing

        return timing.totals()

    def install(self) -> None:
        from tasks import payout

        for name in self.NAMES:
            setattr(payout, name, self._wrap(name, getattr(payout, name)))

    def _wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            with self.lock:
                self.active[name] = self.active.get(name, 0) + 1
                if self.active[name] == 1:
                    self.started[name] = (time.monotonic(), self._now())
            try:
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.active[name] -= 1
                    if self.active[name] == 0:
                        t0, before = self.started.pop(name)
                        after = self._now()
                        got = self.done.setdefault(name, {"seconds": 0.0})
                        got["seconds"] = round(got["seconds"] + time.monotonic() - t0, 2)
                        for k in after:
                            got[k] = round(got.get(k, 0.0) + after[k] - before[k], 1)

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed


def vm_hwm_mb(pid: int | str = "self") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Resets this process's peak RSS (VmHWM) so that it measures the timed run only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler(threading.Thread):
    """Peak RSS of this process's children (the simulator, Prefect's temporary server),
    sampled every 0.2 s."""

    def __init__(self, simulator_pid: int) -> None:
        super().__init__(daemon=True)
        self.simulator_pid = simulator_pid
        self.peaks: dict[str, float] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop_event.is_set():
            try:
                children = me.children(recursive=True)
            except psutil.Error:
                children = []
            total = 0.0
            for child in children:
                try:
                    rss = child.memory_info().rss / 2**20
                    cmd = " ".join(child.cmdline())
                except psutil.Error:
                    continue
                if child.pid == self.simulator_pid:
                    name = "simulator"
                elif "prefect" in cmd or "uvicorn" in cmd:
                    name = "prefect_server"
                else:
                    name = "other_children"
                total += rss
                self.peaks[name] = max(self.peaks.get(name, 0.0), round(rss, 1))
            self.peaks["children_total"] = max(self.peaks.get("children_total", 0.0), round(total))
            self.stop_event.wait(0.2)

    def stop(self) -> dict[str, float]:
        self.stop_event.set()
        self.join()
        return self.peaks


def process_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- main
def main() -> None:
    global LATENCY_MS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--participants", type=int, default=1_000_000)
    ap.add_argument("--seed", default="bench")
    ap.add_argument("--workdir", default=None)
    ap.add_argument(
        "--database", default=None, help="SQLAlchemy URL; default: a SQLite file in the workdir"
    )
    ap.add_argument("--keep", action="store_true", help="keep the workdir and its database")
    ap.add_argument(
        "--max-rps",
        action="append",
        default=[],
        metavar="KIND=N",
        help=f"override a kind's calls/s ({', '.join(sorted(MAX_RPS))})",
    )
    ap.add_argument("--latency-ms", type=int, default=LATENCY_MS)
    args = ap.parse_args()
    LATENCY_MS = args.latency_ms
    for item in args.max_rps:
        kind, _, value = item.partition("=")
        if kind not in MAX_RPS or not value.replace(".", "", 1).isdigit() or float(value) <= 0:
            ap.error(f"--max-rps {item!r}: expected KIND=N with KIND one of {sorted(MAX_RPS)}")
        MAX_RPS[kind] = float(value)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    from sqlalchemy import insert

    from flows.payout import run_payout_flow
    from models.tables import Registrant
    from partners.simulator.server import SimulatorProcess
    from readmodels.payouts import payout_report
    from rules import lifecycle as lc
    from runtime import app as runtime
    from services.payouts import start_payout_run

    n = args.participants
    temp = args.workdir is None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="payout-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / "payout.db"
    if args.database:
        from sqlmodel import SQLModel, create_engine

        import models.tables  # noqa: F401

        engine = create_engine(args.database, hide_parameters=True)
        SQLModel.metadata.drop_all(engine)
        engine.dispose()
        database = args.database
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        database = f"sqlite:///{db_path}"

    at = D0 + timedelta(days=DAYS_AFTER)
    as_of = lc.wib_date(at)
    result: dict = {
        "participants": n,
        "as_of": as_of.isoformat(),
        "credited_at_utc": D0.isoformat(),
        "conditions": {"latency_ms": LATENCY_MS, "max_rps": MAX_RPS, "batch_size": 1000},
    }
    try:
        with SimulatorProcess(args.seed) as sim:
            sim_pid = sim.process.pid
            config = partner_settings(sim.base_url)
            # ---- setup (not timed)
            t0 = time.monotonic()
            admin(sim, "faults", {"seed": "bench"})  # no latency, no limits while setting up
            admin(sim, "clock", {"now": wib_iso(D0)})
            rt = runtime.configure(database=database, partners_config=config)
            insert_wave(rt, n)
            people = People(args.seed)
            issuer = Issuer(sim.base_url)
            table = Registrant.__table__  # type: ignore[attr-defined]
            for first in range(1, n + 1, CHUNK):
                rows = registrant_rows(people, first, min(CHUNK, n + 1 - first))
                with rt.engine.begin() as conn:
                    conn.execute(insert(table), rows)
                issuer.credit(rows)
            credits = issuer.wait()
            if args.database and args.database.startswith("postgresql"):
                with rt.engine.begin() as conn:
                    conn.exec_driver_sql("ANALYZE")
            result["setup"] = {
                "credits": credits,
                "listed_since_wave": people.listed_since,
                "deceased_since_wave": people.deceased_since,
            }
            admin(sim, "clock", {"now": wib_iso(at)})
            # The first feed read after the clock moved delivers every event it passed
            # (a simulator's chore, not the program's): done here, before the clock.
            import requests

            for t in config.training_platforms:
                requests.get(
                    f"{t.base_url}/v1/events", params={"limit": 1}, headers=AUTH, timeout=600
                ).raise_for_status()
            sim_stats = admin(sim, "stats")
            result["setup"]["simulator_training"] = sim_stats["training"]
            admin(sim, "faults", bench_faults(config))
            admin(sim, "reset-stats", {})
            result["setup"]["seconds"] = round(time.monotonic() - t0, 1)

            # Prefect's temporary server starts before the clock: not the run's cost.
            from prefect import get_client

            with get_client(sync_client=True) as client:
                client.hello()

            # ---- the timed run
            steps = Steps()
            steps.install()
            peak_reset = reset_peak_rss()
            sampler = RssSampler(sim_pid)
            sampler.start()
            sim_cpu0 = process_cpu_s(sim_pid)
            cpu0 = time.process_time()
            started = time.monotonic()
            outcome = start_payout_run(rt, as_of, run_flow=run_payout_flow, by="bench")
            wall = time.monotonic() - started
            cpu = time.process_time() - cpu0
            sim_cpu = process_cpu_s(sim_pid) - sim_cpu0
            peaks = sampler.stop()
            bench_peak = vm_hwm_mb() if peak_reset else None
            after = admin(sim, "stats")
            t1 = time.monotonic()
            report = payout_report(rt.sessions, as_of)
            report_s = time.monotonic() - t1

            stages = {}
            for name, stage in ((outcome.result or {}).get("stages") or {}).items():
                entry = {"seconds": stage.get("seconds")}
                if name == "reconcile":
                    entry["ok"] = stage.get("ok")
                    entry["ledger_count"] = stage.get("ledger_count")
                else:
                    entry["counts"] = stage.get("counts", {})
                    if stage.get("failures"):
                        entry["failures"] = stage["failures"]
                    if stage.get("pending"):
                        entry["pending"] = stage["pending"]
                stages[name] = entry
            te = stages.get("training-events", {})
            events = int(te.get("counts", {}).get("events", 0))
            stage_s = te.get("seconds")
            feed_s = steps.done.get("read_feed", {}).get("seconds")
            revocation = stages.get("revocation", {}).get("counts", {})
            disburse = stages.get("disburse", {}).get("counts", {})
            # Per partner: its calls in the run (429s included), the calls admitted past
            # its rate limit, and its achieved rate: admitted calls over the span from its
            # first to its last (batch POSTs); for partners only read with GETs (the
            # feeds), calls over the seconds of the step that read them.
            span_of_kind = {"training": steps.done.get("read_feed", {}).get("seconds")}
            partners = {}
            for pid, calls in sorted(after.get("calls", {}).items()):
                kind = kind_of(config, pid)
                limit = MAX_RPS.get(kind)
                seen = after.get("admitted", {}).get(pid)
                if seen:
                    admitted, span = seen["calls"], seen["last"] - seen["first"]
                else:
                    admitted, span = calls, span_of_kind.get(kind) or 0
                rate = round(admitted / span, 1) if span > 0 else None
                partners[pid] = {
                    "calls": calls,
                    "admitted": admitted,
                    "items": after["items"].get(pid, 0),
                    "span_s": round(span, 1),
                    "rps": rate,
                    "max_rps": limit,
                    "of_max": round(rate / limit, 2) if rate and limit else None,
                }
            paid = sum(v for k, v in disburse.items() if k.startswith("paid_"))
            result.update(
                {
                    "end": outcome.end.value,
                    "message": outcome.message or None,
                    "wall_s": round(wall, 1),
                    "stages": stages,
                    "steps": steps.done,
                    "events_ingested": events,
                    "events_per_s_stage": round(events / stage_s) if stage_s else None,
                    "events_per_s_feeds": round(events / feed_s) if feed_s else None,
                    "revoked": sum(v for k, v in revocation.items() if k.startswith("revoked_")),
                    "card_used_at_issuer": revocation.get("card_used_at_issuer", 0),
                    "rupiah_returned": revocation.get("rupiah_returned", 0),
                    "payments_paid": paid,
                    "payments_failed": sum(
                        v for k, v in disburse.items() if k.startswith("failed_")
                    ),
                    "partners": partners,
                    "cpu_s": {
                        "bench_process": round(cpu, 1),
                        "simulator": round(sim_cpu, 1),
                    },
                    "peak_rss_mb": {
                        "bench_process": bench_peak,
                        "bench_process_lifetime": vm_hwm_mb() if not peak_reset else None,
                        **peaks,
                        "simulator_lifetime": vm_hwm_mb(sim_pid),
                    },
                    "report_s": round(report_s, 1),
                    "conservation_ok": report.get("conservation_ok"),
                    # (payout_report skips this one when given an as-of date)
                    "participants_equal_credited": report["participants"] == report["credited"],
                    "lifecycle": report.get("states"),
                    "payments": report.get("payments"),
                    "paid_before_exclusion": report.get("paid_before_exclusion"),
                    "unmatched_events": report.get("unmatched_events"),
                }
            )
            runtime.reset()
    finally:
        if not args.keep:
            if temp:
                shutil.rmtree(work, ignore_errors=True)
            elif not args.database:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    print(json.dumps(result, default=str))
    if result.get("end") not in ("done", "pending"):
        sys.exit(1)


if __name__ == "__main__":
    main()
