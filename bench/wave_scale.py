"""Seed-scale benchmark: a whole wave of N registrants, under Prefect and without it.

Generates the export, starts the partner simulator (a separate process) with realistic
latency and rate limits, runs the wave under Prefect on a fresh database, then runs the
same stage functions without Prefect on another fresh database, and prints one JSON line.

    .venv/bin/python bench/wave_scale.py --registrants 1000000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REFERENCE = date(2026, 11, 28)
# Stated partner conditions: every call waits LATENCY_MS at the partner; each partner
# admits MAX_RPS calls a second (the simulator answers 429 above it, the clients pace
# themselves below it). Partner calls carry 1,000 items; a batch task holds
# flows.wave.batch_size() registrants (PRAKERJA_BATCH_SIZE, default 10,000).
LATENCY_MS = 50
MAX_RPS = {"registry": 40, "agency": 40, "payment": 20, "card-issuer": 20, "notifier": 20}


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
    )


def faults_file(path: Path, config) -> Path:
    lines = ['seed = "bench"', "[default]", f"latency_ms = {LATENCY_MS}"]
    for p in config.every():
        lines += [f'[partners."{p.id}"]', f"max_rps = {p.max_rps}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def stats(sim) -> dict:
    import requests

    return requests.get(f"{sim.base_url}/_admin/stats", timeout=10).json()


def settings(quota: int):
    from rules.settings import WaveSettings

    return WaveSettings(wave_id=1, quota=quota, lottery_seed="bench", reference_date=REFERENCE)


def create_wave(rt, quota: int, export: Path, drop_indexes: list[str] | None = None) -> None:
    from sqlalchemy import text

    from tasks.waves import create_or_resume_wave

    create_or_resume_wave(
        rt.sessions, settings(quota), source_path=str(export), source_sha256=None, given=set()
    )
    with rt.engine.begin() as conn:  # what an index costs the wave (--drop-index)
        for name in drop_indexes or []:
            conn.execute(text(f"DROP INDEX {name}"))


_gc = {"s": 0.0, "at": 0.0}


def _time_gc(phase: str, _info: dict) -> None:
    """Seconds this process spends in Python's cyclic garbage collector."""
    if phase == "start":
        _gc["at"] = time.perf_counter()
    else:
        _gc["s"] += time.perf_counter() - _gc["at"]


gc.callbacks.append(_time_gc)


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds (user and system) of another process so far; 0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prefect_server_pids() -> list[int]:
    """This process's children running Prefect's temporary server (none with a real one)."""
    found = []
    try:
        children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    except OSError:
        return []
    for pid in children:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"uvicorn" in cmdline and b"prefect" in cmdline:
            found.append(int(pid))
    return found


class Breakdown:
    """Per stage: seconds in SQL, in partner calls, waiting for a partner's rate limit
    (thread-seconds, the run's process and its workers together), and CPU seconds of the
    run's process and its workers (runtime/timing.py)."""

    def __init__(self, simulator_pid: int | None = None) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self._at: dict[str, dict[str, float]] = {}
        self._simulator = simulator_pid

    def _now(self) -> dict[str, float]:
        from runtime import timing, workers

        got = timing.totals(workers.worker_pids())
        # The same machine's other busy processes: the partner simulator (standing for
        # partners that would not share these cores) and Prefect's temporary server.
        got["simulator_cpu_s"] = process_cpu_s(self._simulator)
        got["prefect_server_cpu_s"] = sum(process_cpu_s(pid) for pid in prefect_server_pids())
        got["gc_s"] = _gc["s"]  # the run's process only
        return got

    def start(self, stage: str) -> None:
        self._at[stage] = self._now()

    def finish(self, stage: str) -> None:
        before, after = self._at.pop(stage), self._now()
        self.stages[stage] = {k: round(after[k] - before[k], 1) for k in after}

    def on_event(self, event) -> None:  # runtime.progress's listener
        if event.kind == "started":
            self.start(event.stage)
        elif event.kind == "finished" and event.stage in self._at:
            self.finish(event.stage)


def run_under_prefect(rt, export: Path, simulator_pid: int | None = None):
    from prefect import get_client, tags

    from flows.wave import wave
    from runtime import progress

    # Start Prefect's temporary server before the clock: it is not the wave's cost.
    with get_client(sync_client=True) as client:
        client.hello()

    breakdown = Breakdown(simulator_pid)
    started = time.monotonic()
    with tags("prakerja", "wave-1", "bench"), progress.listen(breakdown.on_event):
        summary = wave(wave_id=1, registrants_path=str(export))
    return time.monotonic() - started, summary, breakdown.stages


def run_plain(rt, export: Path, simulator_pid: int | None = None) -> tuple[float, dict]:
    """The same stage functions in the same order and concurrency (the same worker
    processes for identity and screening), without Prefect."""
    from flows.runners import partner_threads, worker_stage_threads
    from flows.wave import LOCAL_BATCH, batch_size
    from models.enums import State
    from readmodels import reporting
    from runtime import workers
    from runtime.execution import Execution
    from tasks import (
        accounts,
        announce,
        draw,
        eligibility,
        identity,
        intake,
        rollout,
        screening,
        waves,
    )
    from tasks.common import plan_batches
    from tasks.portal_index import build_portal_index

    execution = Execution.from_env()
    BATCH = batch_size()
    PARTNER_THREADS = partner_threads(execution)
    WORKER_STAGE_THREADS = worker_stage_threads(execution)
    n_workers = execution.workers()
    s, p = rt.sessions, rt.partners
    seconds: dict[str, float] = {}

    def batches(states, size, fn, workers=PARTNER_THREADS):
        with s() as session:
            ranges = plan_batches(session, 1, states, size)
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, ranges))

    breakdown = Breakdown(simulator_pid)

    def timed(name, fn):
        t0 = time.monotonic()
        breakdown.start(name)
        fn()
        breakdown.finish(name)
        seconds[name] = round(time.monotonic() - t0, 3)

    started = time.monotonic()
    if intake.is_big_export(export):
        workers.warm_up(n_workers)  # as the wave flow does

    def intake_stage():  # as the wave flow's: load, then the dashboard's index
        intake.import_export(s, 1, export, parse_elsewhere=n_workers > 0)
        build_portal_index(s, 1)

    timed("intake", intake_stage)
    timed(
        "local-eligibility",
        lambda: batches(
            [State.AWAIT_LOCAL.value],
            LOCAL_BATCH,
            lambda r: eligibility.check_local_eligibility_batch(s, 1, r),
            2,
        ),
    )
    timed(
        "identity",
        lambda: batches(
            [State.AWAIT_IDENTITY.value],
            BATCH,
            lambda r: workers.run(identity.identity_job, 1, r, workers=n_workers),
            WORKER_STAGE_THREADS,
        ),
    )
    timed(
        "screening",
        lambda: (
            batches(
                [State.AWAIT_SCREENING.value],
                BATCH,
                lambda r: workers.run(screening.screening_job, 1, r, workers=n_workers),
                WORKER_STAGE_THREADS,
            ),
            waves.refresh_statistics(s),
        ),
    )
    timed("draw", lambda: (draw.draw_participants(s, 1), waves.refresh_statistics(s)))

    def accounts_rounds():
        while True:
            batches(
                [State.SELECTED.value],
                BATCH,
                lambda r: accounts.verify_accounts_batch(s, p.payments, 1, r),
            )
            with s() as session:
                if draw.accounts_unanswered(session, 1):
                    return
            if not draw.fill_free_seats(s, 1).get("selected"):
                return

    timed("accounts", accounts_rounds)
    timed(
        "rollout",
        lambda: (
            batches(
                [State.CONFIRMED.value],
                BATCH,
                lambda r: rollout.credit_training_balance_batch(s, p.issuer, 1, r),
            ),
            reporting.reconcile(s, p.issuer, 1),
        ),
    )

    def sms():
        ranges = announce.plan_message_batches(s, 1, BATCH)
        with ThreadPoolExecutor(PARTNER_THREADS) as pool:
            list(pool.map(lambda r: announce.send_messages_batch(s, p.notifier, 1, r), ranges))

    timed("announce", sms)
    waves.close_wave_if_done(s, 1, keep_open=False)
    with s() as session:
        report = reporting.wave_report(session, 1)
    return time.monotonic() - started, {
        "seconds": seconds,
        "report": report,
        "breakdown": breakdown.stages,
    }


STAGE_RECORDS = {
    "intake": lambda f: f["registered"],
    "local-eligibility": lambda f: f["intake_accepted"],
    "identity": lambda f: f["locally_eligible"],
    "screening": lambda f: f["identity_verified"],
    "draw": lambda f: f["eligible"],
    "accounts": lambda f: f["selected"],
    "rollout": lambda f: f["confirmed"],
    "announce": lambda f: f["credited"],
}
STAGE_PARTNERS = {
    "identity": ["registry"],
    "screening": "agency",
    "accounts": "payment",
    "rollout": ["card-issuer"],
    "announce": ["notifier"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registrants", type=int, default=5_965_048)
    ap.add_argument("--seed", default="bench")
    ap.add_argument("--workdir", default=None)
    ap.add_argument(
        "--database",
        default=None,
        help="SQLAlchemy URL prefix; default: SQLite files in the workdir",
    )
    ap.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the run without Prefect (no prefect_overhead_ratio)",
    )
    ap.add_argument(
        "--drop-index",
        action="append",
        default=[],
        metavar="NAME",
        help="drop this index of the program database before both runs: what maintaining "
        "it costs the wave (its readers then scan instead)",
    )
    ap.add_argument(
        "--max-ratio",
        type=float,
        default=None,
        help="exit 1 when the run under Prefect takes more than this many times the run "
        "without it (CI's regression guard: a ratio on the same machine, never a time)",
    )
    ap.add_argument(
        "--max-rps",
        action="append",
        default=[],
        metavar="KIND=N",
        help="override a kind's calls/s (registry, agency, payment, card-issuer, notifier),"
        " e.g. --max-rps agency=5 to make screening rate-bound",
    )
    args = ap.parse_args()
    for item in args.max_rps:
        kind, _, value = item.partition("=")
        if kind not in MAX_RPS or not value.replace(".", "", 1).isdigit() or float(value) <= 0:
            ap.error(f"--max-rps {item!r}: expected KIND=N with KIND one of {sorted(MAX_RPS)}")
        MAX_RPS[kind] = float(value)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    from flows.wave import batch_size
    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorProcess
    from rules.funnel import demo_quota
    from runtime import app as runtime
    from runtime import workers

    work = Path(args.workdir or tempfile.mkdtemp(prefix="wave-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    export = work / "wave.csv"
    t0 = time.monotonic()
    generate_export(export, registrants=args.registrants, seed=args.seed, reference_date=REFERENCE)
    generate_s = time.monotonic() - t0
    quota = demo_quota(args.registrants)

    def fresh_db(name: str) -> str:
        if args.database:
            from sqlmodel import SQLModel, create_engine

            import models.tables  # noqa: F401

            engine = create_engine(args.database, hide_parameters=True)
            SQLModel.metadata.drop_all(engine)
            engine.dispose()
            return args.database
        path = work / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"

    result: dict = {
        "registrants": args.registrants,
        "quota": quota,
        "generate_s": round(generate_s, 1),
        "conditions": {
            "latency_ms": LATENCY_MS,
            "max_rps": MAX_RPS,
            "batch_size": 1000,
        },
    }
    config = partner_settings("http://127.0.0.1:1")
    faults = str(faults_file(work / "faults.toml", config))
    # Each run gets a simulator of its own (same seed, same limits): a partner that had
    # already seen the first run's credits and messages would answer the second faster.
    with SimulatorProcess(args.seed, faults_path=faults) as sim:
        config = partner_settings(sim.base_url)
        rt = runtime.configure(database=fresh_db("prefect"), partners_config=config)
        # (read from the run's own app: asked before it, it would open the default database)
        result["conditions"]["task_batch"] = batch_size()
        create_wave(rt, quota, export, args.drop_index)
        before = stats(sim)
        wall, summary, breakdown = run_under_prefect(rt, export, sim.process.pid)
        after = stats(sim)
        result["wall_s"] = round(wall, 1)
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        from runtime.execution import Execution

        result["worker_processes"] = Execution.from_env().workers()
        result["worker_peak_rss_mb"] = workers.peak_rss_mb()
        funnel = summary.report["funnel"]
        result["funnel"] = funnel
        stages = {}
        for name, info in summary.stages.items():
            n = STAGE_RECORDS[name](funnel)
            sec = info.seconds
            stages[name] = {
                "records": n,
                "seconds": sec,
                "records_per_s": round(n / sec) if sec else None,
                **breakdown.get(name, {}),
            }
        result["stages"] = stages
        util: dict[str, float] = {}
        active: dict[str, float] = {}
        burst_of = {p.id: p.max_concurrency for p in config.every()}
        for stage, partners in STAGE_PARTNERS.items():
            sec = stages.get(stage, {}).get("seconds")
            if not sec:
                continue
            ids = (
                partners
                if isinstance(partners, list)
                else [
                    k
                    for k in after["calls"]
                    if (partners == "agency" and k in {a.id for a in config.agencies})
                    or (partners == "payment" and k in config.payment_providers)
                ]
            )
            for pid in ids:
                calls = after["calls"].get(pid, 0) - before["calls"].get(pid, 0)
                limit = MAX_RPS[
                    "agency"
                    if partners == "agency"
                    else "payment"
                    if partners == "payment"
                    else pid
                ]
                util[pid] = round(calls / sec / limit, 2)
                # The same partner's admitted calls over the span it was being called
                # (first to last call): the stage's own start and tail left out.
                seen = after.get("admitted", {}).get(pid)
                # Less the client's burst (calls it may make at once before pacing), and
                # only over a span of 10 s or more: a partner called for a second or two
                # (card issuer, notifier at small N) shows that burst, not its rate.
                if seen and seen["last"] - seen["first"] >= 10:
                    span = seen["last"] - seen["first"]
                    burst = min(burst_of[pid], limit)
                    active[pid] = round(max(0, seen["calls"] - burst) / span / limit, 2)
        result["partner_utilization"] = util
        result["partner_utilization_while_calling"] = active
        runtime.reset()
    if not args.no_baseline:
        with SimulatorProcess(args.seed, faults_path=faults) as sim:
            config = partner_settings(sim.base_url)
            rt = runtime.configure(database=fresh_db("plain"), partners_config=config)
            create_wave(rt, quota, export, args.drop_index)
            plain_wall, plain = run_plain(rt, export, sim.process.pid)
            result["plain_wall_s"] = round(plain_wall, 1)
            result["plain_stages_s"] = plain["seconds"]
            result["plain_breakdown"] = plain["breakdown"]
            result["prefect_overhead_ratio"] = round(wall / plain_wall, 3)
            result["same_outcomes"] = plain["report"]["outcomes"] == summary.report["outcomes"]
            runtime.reset()
    print(json.dumps(result))
    ratio = result.get("prefect_overhead_ratio")
    if args.max_ratio is not None:
        if ratio is None or not result.get("same_outcomes"):
            sys.exit(
                "wave_scale: --max-ratio needs the run without Prefect, with the same outcomes"
            )
        if ratio > args.max_ratio:
            sys.exit(
                f"wave_scale: the wave under Prefect took {ratio:.2f} times the run without it "
                f"(at most {args.max_ratio}): a regression in the pipeline; see the stages above"
            )


if __name__ == "__main__":
    main()
