"""Announcement morning on the registrant dashboard, and the months after: one JSON line.

A third of a 5,965,048-registrant wave signs in within the first hour (about 550
sign-ins a second), then keeps reading its status; later its 200,000 participants read
their lifecycle (training deadline, incentives, surveys) and answer surveys. Against a
database holding a whole wave (bench/wave_scale.py leaves one), this measures:

1. what the dashboard builds: wave 1's portal index (dropped, then rebuilt and timed,
   with the database's growth) and the announcement;
2. lifecycle rows for the wave's CREDITED registrants (bench/lifecycle_seed.py: bulk
   inserts of participants, incentive and survey payments and survey-1 answers as a
   payout run would leave them 65 days after the credit; kept when already there);
3. signed-in status reads (`GET /api/me`) of participants (every lifecycle state), driven
   by `wrk` over thousands of sessions; one answer is checked for its `lifecycle`;
4. survey answers (`POST /api/surveys/2` with a valid JSON body) by `wrk`, each session a
   participant whose survey 2 is OPEN (installment 2 PAID, not answered), answering once:
   201s against anything else, and the answers stored counted in the database;
5. sign-ins (`POST /api/login`, the code read from the simulator's gateway,
   `POST /api/login/verify`) driven by Locust, each with a registrant not used before;

against `prakerja portal --workers W` and the partner simulator, each a process of its
own on this machine. The load generators' CPU, the portal's CPU and peak RSS, and the
machine's load average before each phase are reported beside the rates, since they share
the machine's cores.

    .venv/bin/python bench/portal_load.py --registrants 100000 --build
    .venv/bin/python bench/portal_load.py            # the 6M wave, built beforehand
    .venv/bin/python bench/portal_load.py --database postgresql+psycopg://... --skip-index

bench/wave_scale.py works in a fresh temporary folder unless given --workdir; --build
gives it bench/out/wave_scale-N/, where its Prefect run leaves prefect.db, the default
--database here. The simulator is started with the same seed (--seed, "bench").
`--phases reads,surveys,signins` picks phases; `--no-lifecycle` reads registrants of the
portal index instead of participants (the dashboard before lifecycle.md).

Needs `wrk` (`apt-get install -y wrk`) and Locust (`pip install -e '.[bench]'`).
Work files go to bench/out/portal_load/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out"
WORK = OUT / "portal_load"
WAVE = 1  # the wave bench/wave_scale.py runs
SEED = "bench"  # bench/wave_scale.py's default seed: the simulator must match
FULL_WAVE = 5_965_048
LOCUSTFILE = ROOT / "bench" / "portal_locustfile.py"


def log(msg: str) -> None:
    print(f"[portal_load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def scale_workdir(registrants: int) -> Path:
    return OUT / f"wave_scale-{registrants}"


def default_database(registrants: int) -> str:
    """The SQLite database of the Prefect run of `wave_scale.py --workdir <this dir>`."""
    return f"sqlite:///{scale_workdir(registrants) / 'prefect.db'}"


def sqlite_path(url: str) -> Path | None:
    return Path(url.split("///", 1)[1]) if url.startswith("sqlite") else None


# ------------------------------------------------------------------ the database
def has_wave(url: str) -> bool:
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return False
    from sqlalchemy import create_engine, text

    engine = create_engine(url, hide_parameters=True)
    try:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT count(*) FROM wave WHERE wave_id = :w AND drawn_at IS NOT NULL"),
                    {"w": WAVE},
                ).scalar()
            )
    except Exception:
        return False
    finally:
        engine.dispose()


def build_database(url: str, registrants: int, seed: str) -> dict:
    """Runs bench/wave_scale.py (the Prefect run only) to leave a whole wave in `url`."""
    path = sqlite_path(url)
    cmd = [sys.executable, str(ROOT / "bench" / "wave_scale.py")]
    cmd += ["--registrants", str(registrants), "--no-baseline", "--seed", seed]
    if path is not None:
        if path.name != "prefect.db":
            raise SystemExit(
                f"--build makes SQLite databases named prefect.db (bench/wave_scale.py's), "
                f"not {path.name}"
            )
        cmd += ["--workdir", str(path.parent)]
    else:
        cmd += ["--workdir", str(scale_workdir(registrants)), "--database", url]
    log(f"building the wave: {' '.join(cmd)}")
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench/wave_scale.py failed with exit code {done.returncode}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["build_s"] = round(time.monotonic() - started, 1)
    log(f"wave built in {summary['build_s']:.0f} s")
    return summary


def used_bytes(engine) -> dict:
    """The database's size: pages in use (SQLite: without the free list) and files."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            page = conn.exec_driver_sql("PRAGMA page_size").scalar()
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar()
            try:
                index = conn.exec_driver_sql(
                    "SELECT sum(pgsize) FROM dbstat WHERE name IN "
                    "('portal_person', 'sqlite_autoindex_portal_person_1')"
                ).scalar()
            except Exception:  # SQLite built without dbstat
                index = None
            return {"used": (pages - free) * page, "file": pages * page, "portal_person": index}
        size = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
        index = conn.exec_driver_sql("SELECT pg_total_relation_size('portal_person')").scalar()
        return {"used": size, "file": size, "portal_person": index}


def rebuild_index_and_announce(url: str) -> dict:
    """Drops wave 1's portal index and announcement, then times building and announcing."""
    from sqlalchemy import text

    from models.db import make_engine, session_factory
    from tasks.portal_index import announce_wave, build_portal_index

    engine = make_engine(url)
    sessions = session_factory(engine)
    sqlite = engine.dialect.name == "sqlite"
    started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM portal_person WHERE wave_id = :w"), {"w": WAVE})
        conn.execute(
            text(
                "UPDATE wave SET portal_indexed_at = NULL, announced_at = NULL, "
                "announce_message = NULL WHERE wave_id = :w"
            ),
            {"w": WAVE},
        )
        # Sessions and sign-in limits of an earlier run of this benchmark.
        conn.execute(text("DELETE FROM portal_session"))
        conn.execute(text("DELETE FROM login_guard"))
    if sqlite:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE portal_person")
    reset_s = time.monotonic() - started
    log(f"wave {WAVE}'s portal index dropped in {reset_s:.1f} s; building it again")
    before = used_bytes(engine)
    t0 = time.monotonic()
    built = build_portal_index(sessions, WAVE)
    build_s = time.monotonic() - t0
    after = used_bytes(engine)
    log(f"portal index: {built['indexed']:,} NIKs in {build_s:.1f} s")
    t0 = time.monotonic()
    announced = announce_wave(sessions, WAVE, "Hasil gelombang 1 sudah keluar.")
    announce_s = time.monotonic() - t0
    log(f"wave {WAVE} announced in {announce_s:.3f} s")
    engine.dispose()
    return {
        "portal_index_reset_s": round(reset_s, 1),
        "portal_index_build_s": round(build_s, 2),
        "portal_index_rows": built["indexed"],
        "portal_index_growth_mb": round((after["used"] - before["used"]) / 2**20, 1),
        "portal_index_mb": (
            round(after["portal_person"] / 2**20, 1) if after["portal_person"] else None
        ),
        "database_mb": round(after["used"] / 2**20, 1),
        "announce_s": round(announce_s, 3),
        "announce_index_built_now": announced["index_built_now"],
    }


def clear_portal_state(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, hide_parameters=True)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM portal_session"))
            conn.execute(text("DELETE FROM login_guard"))
    finally:
        engine.dispose()


def count_registrants(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, hide_parameters=True)
    with engine.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM registrant WHERE wave_id = :w"), {"w": WAVE}
        ).scalar()
    engine.dispose()
    return int(n or 0)


def sample_people(url: str, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """`n` random (NIK, phone) of wave 1's portal index, each NIK and phone once."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, hide_parameters=True)
    chosen: dict[str, str] = {}
    phones: set[str] = set()
    query = (
        "SELECT p.nik, r.phone FROM portal_person p JOIN registrant r ON r.id = p.registrant_id "
        "WHERE p.wave_id = :w AND r.phone IS NOT NULL AND trim(r.phone) != '' AND "
    )
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            top = conn.execute(text("SELECT max(rowid) FROM portal_person")).scalar() or 0
            tries = 0
            while len(chosen) < n and tries < 50:
                tries += 1
                ids = rng.sample(range(1, top + 1), min(top, 2 * (n - len(chosen)) + 100))
                for start in range(0, len(ids), 900):
                    part = ",".join(str(i) for i in ids[start : start + 900])
                    for nik, phone in conn.execute(
                        text(query + f"p.rowid IN ({part})"), {"w": WAVE}
                    ):
                        if nik not in chosen and phone not in phones and len(chosen) < n:
                            chosen[nik] = phone
                            phones.add(phone)
        else:
            rows = conn.execute(
                text(query + "true ORDER BY random() LIMIT :n"), {"w": WAVE, "n": 2 * n}
            )
            for nik, phone in rows:
                if nik not in chosen and phone not in phones and len(chosen) < n:
                    chosen[nik] = phone
                    phones.add(phone)
    engine.dispose()
    if len(chosen) < n:
        raise SystemExit(f"wave {WAVE} has only {len(chosen)} registrants with a phone to use")
    people = list(chosen.items())
    rng.shuffle(people)
    return people


def prefill(url: str, sessions: int, guards: int) -> None:
    """Mid-morning volume: live sessions and sign-in guard rows of people not in the
    run (random hashes, seen in the last 30 and 15 minutes), which every scan of those
    tables reads. Rows an earlier run left are dropped first."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, hide_parameters=True)
    now = time.time()
    rng = random.Random("prefill")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM portal_session"))
        conn.execute(text("DELETE FROM login_guard"))
        for start in range(0, sessions, 50_000):
            rows = []
            for _ in range(min(50_000, sessions - start)):
                seen = now - rng.uniform(0, 29 * 60)
                rows.append(
                    {"t": secrets.token_hex(32), "n": f"{rng.randrange(10**16):016d}", "s": seen}
                )
            conn.execute(
                text(
                    "INSERT INTO portal_session (token_hash, nik, created_at, last_seen) "
                    "VALUES (:t, :n, :s, :s)"
                ),
                rows,
            )
        for start in range(0, guards, 50_000):
            rows = []
            for _ in range(min(50_000, guards - start)):
                at = now - rng.uniform(0, 15 * 60)
                rows.append({"k": secrets.token_hex(32), "r": f"{at:.3f}", "at": at})
            conn.execute(
                text(
                    "INSERT INTO login_guard (key, requests, failures, locked_until, "
                    "code_hash, code_expires, updated_at) VALUES (:k, :r, '', 0, NULL, 0, :at)"
                ),
                rows,
            )
    engine.dispose()


def make_sessions(url: str, secret: str, niks: list[str]) -> list[str]:
    """Signed-in sessions made directly in the store (sign-in is measured on its own)."""
    from portal.store import Store, make_portal_engine

    store = Store(make_portal_engine(url), secret.encode())
    try:
        return [store.create_session(nik) for nik in niks]
    finally:
        store.close()


# ------------------------------------------------------------------ processes
def partners_toml(sim_url: str, notifier_max_rps: float) -> Path:
    """The built-in partners file moved to the simulator, the notifier's pacing raised."""
    from partners.config import simulator_partners_text

    # Names PRAKERJA_SIMULATOR_API_KEY in every section (set in the run's environment).
    text = simulator_partners_text(sim_url)
    # The built-in file leaves max_rps to the code's default: stated after the header.
    text, n = re.subn(r"(?m)^\[notifier\]$", f"[notifier]\nmax_rps = {notifier_max_rps:g}", text)
    if n != 1:
        raise SystemExit("partners/default_partners.toml: no [notifier] section")
    path = WORK / "partners.toml"
    path.write_text(text)
    return path


class ProcessTree:
    """Samples a process and its descendants: peak RSS (sum and largest) and CPU time."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.every_s = every_s
        self.peak_rss = 0
        self.peak_process_rss = 0
        self.processes = 0
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def members(self):
        import psutil

        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sample(self) -> None:
        import psutil

        total = 0
        procs = self.members()
        for p in procs:
            try:
                rss = p.memory_info().rss
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += rss
            self.peak_process_rss = max(self.peak_process_rss, rss)
            self._cpu[p.pid] = t.user + t.system
        self.peak_rss = max(self.peak_rss, total)
        self.processes = max(self.processes, len(procs))

    def cpu_s(self) -> float:
        """CPU seconds of every member seen so far (the last sample of each)."""
        self.sample()
        return sum(self._cpu.values())

    def cpu_by_process(self) -> dict[int, float]:
        self.sample()
        return dict(self._cpu)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def __enter__(self) -> ProcessTree:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def portal_process(env: dict[str, str], port: int, workers: int, root: Path = ROOT):
    """`python -m cli portal --workers W --port P` (from `root`'s checkout) until every
    worker answers."""
    import requests

    log_path = WORK / "portal.log"
    cmd = [sys.executable, "-m", "cli", "portal", "--workers", str(workers), "--port", str(port)]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the portal exited with {proc.returncode}; see {log_path}")
            try:
                if requests.get(f"{base}/api/me", timeout=2).status_code == 401:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the portal did not answer on {base}; see {log_path}")
            time.sleep(0.2)
        # The first answer came from one worker; give the others their start-up too.
        for _ in range(20 * workers):
            requests.get(f"{base}/api/me", timeout=10)
        yield proc, base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            import psutil

            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()


@contextmanager
def profiled(pid: int, name: str, enabled: bool):
    """py-spy over the portal's processes for one phase (collapsed stacks in WORK)."""
    if not enabled:
        yield
        return
    out = WORK / f"profile-{name}.txt"
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    cmd = [spy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
    cmd += ["--rate", "200", "--format", "raw", "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        log(f"profile of {name}: {out}")


def with_others(phase: dict, load_generator_cpu_s: float) -> dict:
    """The phase's figures with the load generator's CPU, and what the rest of the
    machine used meanwhile (other people's work on a shared machine)."""
    known = (
        phase["portal_cpu_s"]
        + phase["simulator_cpu_s"]
        + phase["database_cpu_s"]
        + load_generator_cpu_s
    )
    return phase | {
        "load_generator_cpu_s": load_generator_cpu_s,
        "other_cpu_s": round(max(0.0, phase["machine_busy_cpu_s"] - known), 1),
    }


NODELAY_SITECUSTOMIZE = """\
# Written by bench/portal_load.py --nodelay: TCP_NODELAY on the listening socket uvicorn
# binds for --workers N (accepted sockets inherit it), which uvicorn leaves off there.
import socket

try:
    import uvicorn.config as _config

    _bind = _config.Config.bind_socket

    def _bind_socket(self):
        sock = _bind(self)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    _config.Config.bind_socket = _bind_socket
except ImportError:
    pass
"""


def nodelay_path() -> str:
    """A folder whose sitecustomize turns TCP_NODELAY on for the portal's sockets."""
    folder = WORK / "nodelay"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(NODELAY_SITECUSTOMIZE)
    return str(folder)


def portal_commit(root: Path) -> str | None:
    """The commit the portal ran from, with "+" when its portal/ had changes on top."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "portal", "cli.py"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return (head + "+" if dirty else head) or None


def uvicorn_flavour(env: dict[str, str]) -> dict[str, str]:
    """What uvicorn's "auto" picks in the portal's environment: httptools or h11, uvloop
    or asyncio (the pure-Python ones cost more per request)."""
    probe = (
        "import importlib.util as u; print(u.find_spec('httptools') is not None, "
        "u.find_spec('uvloop') is not None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return {
        "http": "httptools" if out[0] == "True" else "h11",
        "loop": "uvloop" if out[1] == "True" else "asyncio",
    }


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def postgres_cpu_s(url: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving the URL's database (their titles
    name it: "postgres: 15/main: USER DATABASE ..."); {} for SQLite. Other sessions'
    databases on the same server are not counted."""
    if sqlite_path(url) is not None:
        return {}
    import psutil
    from sqlalchemy.engine import make_url

    name = f" {make_url(url).database} "
    found = {}
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or []) + " "
            if title.startswith("postgres:") and name in title:
                t = proc.cpu_times()
                found[proc.pid] = t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def postgres_sessions(url: str) -> int | None:
    """Sessions (connections) PostgreSQL has opened to the URL's database so far
    (pg_stat_database.sessions, PostgreSQL 14 and later); None for SQLite."""
    if sqlite_path(url) is not None:
        return None
    from sqlalchemy import create_engine, text

    engine = create_engine(url, hide_parameters=True)
    try:
        with engine.connect() as conn:
            value = conn.execute(
                text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            ).scalar()
        return int(value) if value is not None else None
    except Exception:
        return None
    finally:
        engine.dispose()


class Phase:
    """CPU of the portal tree, the simulator, the database's backends (PostgreSQL) and the
    whole machine over one phase."""

    def __init__(self, portal: ProcessTree, sim: ProcessTree, url: str = "sqlite://") -> None:
        import psutil

        self.portal, self.sim, self.url = portal, sim, url
        self.t0 = time.monotonic()
        self.portal0, self.sim0 = portal.cpu_by_process(), sim.cpu_s()
        self.db0 = postgres_cpu_s(url)
        self.sessions0 = postgres_sessions(url)
        self.machine0 = psutil.cpu_times()

    def end(self) -> dict:
        import psutil

        wall = time.monotonic() - self.t0
        m1 = psutil.cpu_times()
        by = {
            pid: cpu - self.portal0.get(pid, 0.0)
            for pid, cpu in sorted(self.portal.cpu_by_process().items())
        }
        idle = (m1.idle + getattr(m1, "iowait", 0)) - (
            self.machine0.idle + getattr(self.machine0, "iowait", 0)
        )
        total = sum(m1) - sum(self.machine0)
        return {
            "wall_s": round(wall, 1),
            "portal_cpu_s": round(sum(by.values()), 1),
            # The supervisor, then each worker: how evenly the workers share the load.
            "portal_cpu_s_by_process": [round(v, 1) for v in by.values()],
            "simulator_cpu_s": round(self.sim.cpu_s() - self.sim0, 1),
            # PostgreSQL's backends for the database (a backend that ended during the
            # phase is missed; the portal's pooled connections last).
            "database_cpu_s": round(
                sum(cpu - self.db0.get(pid, 0.0) for pid, cpu in postgres_cpu_s(self.url).items()),
                1,
            ),
            # Connections the database accepted during the phase (this count's own one
            # included): each is a new backend process, whose CPU (fork, start-up, catalog
            # caches) ends with it and shows only in machine_busy, as "other".
            "database_connections_opened": (
                None
                if self.sessions0 is None
                else (postgres_sessions(self.url) or 0) - self.sessions0
            ),
            # From /proc/stat, which samples at clock ticks: work woken in step with a
            # timer (the ~40 ms delayed ACKs of reads without TCP_NODELAY) is undercounted
            # there, unlike the per-process figures above. Approximate, then.
            "machine_busy": round(1 - idle / total, 2) if total else None,
            "machine_busy_cpu_s": round(total - idle, 1),
        }


# ------------------------------------------------------------------ reads (wrk)
WRK_LUA = """
local tokens = {%(tokens)s}
local offset = 0
local n = 0

function setup(thread)
  thread:set("offset", offset)
  offset = offset + math.floor(#tokens / %(threads)d)
end

function init(args)
  n = (tonumber(wrk.thread:get("offset")) or 0) %% #tokens
end

local every = %(every)d

function request()
  n = n %% #tokens + 1
  local headers = {["Cookie"] = "prakerja_session=" .. tokens[n]}
  if every > 0 and n %% every == 0 then
    -- Now and then a connection ends, as a phone's would: wrk connects again, and the
    -- new connection goes to whichever portal worker accepts it first.
    headers["Connection"] = "close"
  end
  return wrk.format("GET", "/api/me", headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"wrk": true, "requests": %%d, "duration_us": %%d, "bytes": %%d, ' ..
    '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d, ' ..
    '"non_2xx": %%d, "connect_errors": %%d, "read_errors": %%d, "write_errors": %%d, ' ..
    '"timeouts": %%d}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def wrk_script(tokens: list[str], threads: int, per_connection: int) -> Path:
    path = WORK / "me.lua"
    listed = ",".join(f'"{t}"' for t in tokens)
    path.write_text(WRK_LUA % {"tokens": listed, "threads": threads, "every": per_connection})
    return path


def run_wrk(
    base: str,
    script: Path,
    threads: int,
    connections: int,
    seconds: int,
    path: str = "/api/me",
    name: str = "wrk",
) -> dict:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    cmd += ["--timeout", "10s", "-s", str(script), f"{base}{path}"]
    before = child_cpu_s()
    done = subprocess.run(cmd, capture_output=True, text=True)
    cpu = child_cpu_s() - before
    line = next((x for x in done.stdout.splitlines() if x.startswith('{"wrk"')), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    (WORK / f"{name}.txt").write_text(done.stdout)
    figures = json.loads(line)
    figures["cpu_s"] = round(cpu, 1)
    return figures


def check_me(base: str, token: str) -> dict:
    """A sample `GET /api/me`: 200, and the shape portal.md gives for an announced wave."""
    import requests

    r = requests.get(f"{base}/api/me", cookies={"prakerja_session": token}, timeout=10)
    body = r.json()
    problems = []
    if r.status_code != 200:
        problems.append(f"status {r.status_code}")
    if r.headers.get("cache-control") != "no-store":
        problems.append("no Cache-Control: no-store")
    if not re.fullmatch(r"\d{4}\*{10}\d{2}", str(body.get("nik_masked"))):
        problems.append("nik_masked")
    waves = body.get("waves") or []
    entry = next((w for w in waves if w.get("wave") == WAVE), None)
    if entry is None or entry.get("announced") is not True:
        problems.append(f"wave {WAVE} missing or not announced")
    elif not {"outcome", "reason", "message"} <= entry.keys():
        problems.append(f"wave {WAVE} lacks outcome/reason/message")
    if problems:
        raise SystemExit(f"GET /api/me does not answer as it should: {', '.join(problems)}")
    return entry


def check_lifecycle(base: str, token: str) -> dict | None:
    """The `lifecycle` of wave 1's entry in one participant's `GET /api/me` (portal.md,
    "After the credit"), checked for its shape; None when the portal shows none (a
    dashboard from before lifecycle.md)."""
    import requests

    r = requests.get(f"{base}/api/me", cookies={"prakerja_session": token}, timeout=10)
    entry = next((w for w in r.json().get("waves") or [] if w.get("wave") == WAVE), {})
    life = entry.get("lifecycle")
    if life is None:
        return None
    keys = {"state", "reason", "training_deadline", "balance_left", "payments", "surveys"}
    if not keys <= life.keys():
        raise SystemExit(f"/api/me's lifecycle lacks {sorted(keys - life.keys())}")
    return {
        "state": life["state"],
        "payments": [f"{p['benefit']} {p['installment']}: {p['status']}" for p in life["payments"]],
        "surveys": [f"{s['survey']}: {s['status']}" for s in life["surveys"]],
    }


SURVEY_BODIES = [
    {
        "work_status": work,
        "training_helped": helped,
        "field": field,
        "applied_for_job": helped % 2 == 0,
        "recommend": helped > 2,
        "comment": "" if helped != 5 else "Sangat membantu.",
    }
    for work, helped, field in (
        ("employed", 4, "digital"),
        ("own_business", 5, "sales"),
        ("not_working", 3, "hospitality"),
        ("employed", 2, "language"),
        ("not_working", 1, "trades"),
        ("employed", 5, "other"),
    )
]


def check_survey(base: str, token: str, k: int) -> dict:
    """One answer by hand before the load: 201, the same again 409, then ANSWERED in
    `/api/me`. {"available": False} when the portal has no survey route yet."""
    import requests

    cookies = {"prakerja_session": token}
    url = f"{base}/api/surveys/{k}"
    first = requests.post(url, json=SURVEY_BODIES[0], cookies=cookies, timeout=10)
    try:
        detail = first.json().get("detail")
    except ValueError:
        detail = None
    if first.status_code in (404, 405) and detail in ("Not Found", "Method Not Allowed"):
        # Starlette's own answer for a path without that route.
        return {"available": False, "status": first.status_code}
    if first.status_code != 201:
        raise SystemExit(f"POST /api/surveys/{k} answered {first.status_code}: {first.text}")
    again = requests.post(url, json=SURVEY_BODIES[1], cookies=cookies, timeout=10)
    if again.status_code != 409:
        raise SystemExit(f"a second POST /api/surveys/{k} answered {again.status_code}")
    life = check_lifecycle(base, token) or {}
    if f"{k}: ANSWERED" not in life.get("surveys", []):
        raise SystemExit(f"survey {k} is not ANSWERED in /api/me after its answer: {life}")
    return {"available": True}


def insert_sessions(url: str, niks: list[str]) -> list[str]:
    """Signed-in sessions written straight into the table, as Store.create_session writes
    them (a random token, its SHA-256 kept), in one transaction: tens of thousands."""
    from sqlalchemy import create_engine, text

    from portal.store import Store

    tokens = [secrets.token_urlsafe(32) for _ in niks]
    now = time.time()
    rows = [
        {"t": Store._token_hash(token), "n": nik, "s": now}
        for token, nik in zip(tokens, niks, strict=True)
    ]
    engine = create_engine(url, hide_parameters=True)
    try:
        with engine.begin() as conn:
            for start in range(0, len(rows), 20_000):
                conn.execute(
                    text(
                        "INSERT INTO portal_session (token_hash, nik, created_at, last_seen) "
                        "VALUES (:t, :n, :s, :s)"
                    ),
                    rows[start : start + 20_000],
                )
    finally:
        engine.dispose()
    return tokens


def count_answers(url: str, k: int) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, hide_parameters=True)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM survey_response WHERE survey = :k AND "
                        "registrant_id IN (SELECT registrant_id FROM participant "
                        "WHERE wave_id = :w)"
                    ),
                    {"k": k, "w": WAVE},
                ).scalar()
                or 0
            )
    finally:
        engine.dispose()


SURVEY_LUA = """
local tokens = {%(tokens)s}
local bodies = {%(bodies)s}
local path = "%(path)s"
local per = %(per)d
local threads = {}
local index = 0
local counters = {"c201", "c409", "c404", "c422", "c401", "c403", "c413", "c5xx", "cother",
                  "wrapped"}

function setup(thread)
  thread:set("first", index * per)
  table.insert(threads, thread)
  index = index + 1
end

function init(args)
  first = tonumber(wrk.thread:get("first")) or 0
  n = 0
  for _, name in ipairs(counters) do _G[name] = 0 end
end

function request()
  -- Each session answers once: the next token of this thread's share. Past the end of
  -- the share the tokens come round again (counted: those answers are 409s).
  n = n + 1
  if n > per then
    n = 1
    wrapped = wrapped + 1
  end
  local i = first + n
  local headers = {["Cookie"] = "prakerja_session=" .. tokens[i],
                   ["Content-Type"] = "application/json"}
  return wrk.format("POST", path, headers, bodies[i %% #bodies + 1])
end

function response(status, headers, body)
  if status == 201 then c201 = c201 + 1
  elseif status == 409 then c409 = c409 + 1
  elseif status == 404 then c404 = c404 + 1
  elseif status == 422 then c422 = c422 + 1
  elseif status == 401 then c401 = c401 + 1
  elseif status == 403 then c403 = c403 + 1
  elseif status == 413 then c413 = c413 + 1
  elseif status >= 500 then c5xx = c5xx + 1
  else cother = cother + 1 end
end

function done(summary, latency, requests)
  local total = {}
  for _, name in ipairs(counters) do total[name] = 0 end
  for _, thread in ipairs(threads) do
    for _, name in ipairs(counters) do total[name] = total[name] + (thread:get(name) or 0) end
  end
  local e = summary.errors
  io.write(string.format(
    '{"wrk": true, "requests": %%d, "duration_us": %%d, "bytes": %%d, ' ..
    '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d, ' ..
    '"non_2xx": %%d, "connect_errors": %%d, "read_errors": %%d, "write_errors": %%d, ' ..
    '"timeouts": %%d, "status": {"201": %%d, "409": %%d, "404": %%d, "422": %%d, ' ..
    '"401": %%d, "403": %%d, "413": %%d, "5xx": %%d, "other": %%d}, "wrapped": %%d}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout,
    total.c201, total.c409, total.c404, total.c422, total.c401, total.c403, total.c413,
    total.c5xx, total.cother, total.wrapped))
end
"""


def survey_script(tokens: list[str], threads: int, k: int) -> Path:
    path = WORK / "survey.lua"
    listed = ",".join(f'"{t}"' for t in tokens)
    bodies = ",".join("'" + json.dumps(b, separators=(",", ":")) + "'" for b in SURVEY_BODIES)
    path.write_text(
        SURVEY_LUA
        % {
            "tokens": listed,
            "bodies": bodies,
            "path": f"/api/surveys/{k}",
            "per": len(tokens) // threads,
        }
    )
    return path


# ------------------------------------------------------------------ sign-ins (Locust)
def check_signin(base: str, sim_url: str, nik: str, phone: str) -> float:
    """One sign-in by hand before the load: the code arrives and opens a session."""
    import requests

    after = requests.get(f"{sim_url}/_admin/messages?last=1", timeout=10).json()["messages"]
    seq = after[-1]["seq"] if after else 0
    t0 = time.monotonic()
    r = requests.post(f"{base}/api/login", json={"nik": nik}, timeout=10)
    if r.status_code != 202:
        raise SystemExit(f"POST /api/login answered {r.status_code}")
    while True:
        found = requests.get(
            f"{sim_url}/_admin/messages",
            params={"template": "login_code", "to": phone, "after": seq, "last": 1},
            timeout=10,
        ).json()["messages"]
        if found:
            break
        if time.monotonic() - t0 > 10:
            raise SystemExit("no sign-in code reached the simulator's gateway in 10 s")
        time.sleep(0.02)
    r = requests.post(
        f"{base}/api/login/verify",
        json={"nik": nik, "code": found[-1]["params"]["code"]},
        timeout=10,
    )
    if r.status_code != 200 or "prakerja_session" not in r.cookies:
        raise SystemExit(f"POST /api/login/verify answered {r.status_code} without a session")
    me = requests.get(f"{base}/api/me", cookies=r.cookies, timeout=10)
    if me.status_code != 200:
        raise SystemExit(f"GET /api/me after sign-in answered {me.status_code}")
    return time.monotonic() - t0


def run_locust(
    base: str,
    sim_url: str,
    people: list[tuple[str, str]],
    users: int,
    spawn_rate: float,
    seconds: int,
    poll_s: float,
    code_reader: str,
) -> dict:
    people_file = WORK / "people.tsv"
    people_file.write_text("".join(f"{nik}\t{phone}\n" for nik, phone in people))
    result = WORK / "locust.json"
    result.unlink(missing_ok=True)
    env = dict(
        os.environ,
        PORTAL_LOAD_PEOPLE=str(people_file),
        PORTAL_LOAD_SIM=sim_url,
        PORTAL_LOAD_POLL_S=str(poll_s),
        PORTAL_LOAD_CODE_READER=code_reader,
        PORTAL_LOAD_RESULT=str(result),
    )
    locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"
    cmd = [locust, "-f", str(LOCUSTFILE), "--headless", "--host", base]
    cmd += ["-u", str(users), "-r", f"{spawn_rate:g}", "-t", f"{seconds}s"]
    cmd += ["--reset-stats", "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "10"]
    before = child_cpu_s()
    with open(WORK / "locust.log", "wb") as out:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    cpu = child_cpu_s() - before
    if not result.exists():
        raise SystemExit(f"locust left no summary (exit {done.returncode}); see locust.log")
    figures = json.loads(result.read_text())
    figures["_cpu_s"] = round(cpu, 1)
    return figures


def load_average() -> list[float]:
    """The machine's 1-, 5- and 15-minute load averages (others' work shows here)."""
    return [round(x, 2) for x in os.getloadavg()]


def socket_errors(figures: dict) -> int:
    return (
        figures["connect_errors"]
        + figures["read_errors"]
        + figures["write_errors"]
        + figures["timeouts"]
    )


def upgrade_schema(url: str, root: Path) -> None:
    """`prakerja db upgrade` from the portal's checkout: a portal of a later commit than
    the wave may come with migrations its database does not have yet (a no-op otherwise)."""
    cmd = [sys.executable, "-m", "cli", "db", "upgrade"]
    env = dict(os.environ, PRAKERJA_DATABASE_URL=url)
    t0 = time.monotonic()
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    log(f"prakerja db upgrade: {done.stdout.strip()[-200:]} ({time.monotonic() - t0:.1f} s)")
    if done.returncode != 0:
        raise SystemExit(f"prakerja db upgrade failed: {done.stderr.strip()[-2000:]}")


# ------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--registrants", type=int, default=FULL_WAVE, help="the wave's size")
    ap.add_argument(
        "--database",
        default=None,
        help="SQLAlchemy URL of a database holding a drawn wave 1 (default: the SQLite "
        "database of `bench/wave_scale.py --registrants N` under bench/out/)",
    )
    ap.add_argument("--build", action="store_true", help="run bench/wave_scale.py if missing")
    ap.add_argument("--seed", default=SEED, help="the wave's and simulator's seed")
    ap.add_argument("--workers", type=int, default=2, help="portal worker processes")
    ap.add_argument("--port", type=int, default=0, help="portal port (default: a free one)")
    ap.add_argument("--notifier-max-rps", type=float, default=200.0)
    ap.add_argument("--sessions", type=int, default=4000, help="signed-in sessions read")
    ap.add_argument("--read-seconds", type=int, default=30)
    ap.add_argument("--read-warmup-seconds", type=int, default=5)
    ap.add_argument("--read-threads", type=int, default=1)
    ap.add_argument("--read-connections", type=int, default=64)
    ap.add_argument(
        "--read-requests-per-connection",
        type=int,
        default=100,
        help="requests a connection carries on average before it closes (0: never)",
    )
    ap.add_argument(
        "--phases",
        default="reads,surveys,signins",
        help="which of reads, surveys, signins to run (comma-separated)",
    )
    ap.add_argument(
        "--no-lifecycle",
        action="store_true",
        help="no lifecycle rows: reads are of registrants of the portal index, no surveys",
    )
    ap.add_argument("--reseed", action="store_true", help="write the lifecycle rows again")
    ap.add_argument("--survey", type=int, default=2, help="the survey answered (k)")
    ap.add_argument(
        "--survey-sessions",
        type=int,
        default=40_000,
        help="participants whose survey is OPEN, each answering once (more than the "
        "phase can use: past them, sessions answer again and get 409)",
    )
    ap.add_argument("--survey-seconds", type=int, default=20)
    ap.add_argument("--survey-connections", type=int, default=64)
    ap.add_argument("--signin-seconds", type=int, default=30)
    ap.add_argument("--signin-users", type=int, default=100, help="Locust users (closed loop)")
    ap.add_argument("--signin-spawn-rate", type=float, default=50)
    ap.add_argument("--signin-people", type=int, default=40_000, help="NIKs set aside to sign in")
    ap.add_argument("--poll-seconds", type=float, default=0.05, help="between gateway reads")
    ap.add_argument(
        "--code-reader",
        choices=["phone", "shared"],
        default="phone",
        help="phone: each user polls the gateway for its own phone's code (the simulator "
        "searches its whole message log per poll); shared: one poller per Locust process "
        "reads every new code for all users",
    )
    ap.add_argument("--skip-index", action="store_true", help="keep the index; no rebuild")
    ap.add_argument(
        "--prefill-sessions",
        type=int,
        default=0,
        help="live sessions of others already in the table (mid-morning: about 1,000,000)",
    )
    ap.add_argument(
        "--prefill-guards",
        type=int,
        default=0,
        help="sign-in guard rows of others from the last 15 minutes (mid-morning: 500,000)",
    )
    ap.add_argument(
        "--portal-pythonpath",
        default=None,
        help="prepended to the portal's PYTHONPATH, e.g. a folder with httptools and uvloop "
        "(pip install --target DIR httptools uvloop), which uvicorn then uses",
    )
    ap.add_argument(
        "--portal-root",
        type=Path,
        default=ROOT,
        help="serve the portal from another checkout (e.g. a git worktree of an earlier "
        "commit), to compare; everything else runs from this one",
    )
    ap.add_argument(
        "--nodelay",
        action="store_true",
        help="what if: TCP_NODELAY on the portal's listening socket. uvicorn --workers N "
        "binds it without, so on asyncio each answer's body waits for the client's delayed "
        "ACK of its headers (about 40 ms; uvloop sets TCP_NODELAY itself)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the portal during reads and sign-ins (bench/out/portal_load/profile-*)",
    )
    args = ap.parse_args()
    phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if phases - {"reads", "surveys", "signins"}:
        ap.error(f"--phases: unknown {sorted(phases - {'reads', 'surveys', 'signins'})}")
    if args.no_lifecycle:
        phases.discard("surveys")

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    try:
        import locust  # noqa: F401
    except ImportError:
        raise SystemExit(
            "Locust is not installed in this venv: .venv/bin/pip install -e '.[bench]'"
        ) from None
    import psutil

    from partners.simulator.server import SimulatorProcess, free_port

    WORK.mkdir(parents=True, exist_ok=True)
    url = args.database or default_database(args.registrants)
    result: dict = {"database": url.split("///", 1)[-1] if sqlite_path(url) else "postgresql"}
    if not has_wave(url):
        if not args.build:
            raise SystemExit(f"no drawn wave {WAVE} in {url}: pass --build to make one")
        built = build_database(url, args.registrants, args.seed)
        # The whole of bench/wave_scale.py (export, simulator, Prefect) and its wave alone.
        result["build_s"] = built["build_s"]
        result["build_wave_wall_s"] = built.get("wall_s")
    upgrade_schema(url, args.portal_root)
    result["registrants"] = count_registrants(url)
    if not args.skip_index:
        result.update(rebuild_index_and_announce(url))
    else:
        # The index is kept; an earlier run's sessions and sign-in limits are not (the
        # same people sign in again: their 15-minute and 24-hour limits would answer).
        clear_portal_state(url)

    if args.prefill_sessions or args.prefill_guards:
        t0 = time.monotonic()
        prefill(url, args.prefill_sessions, args.prefill_guards)
        log(
            f"prefilled {args.prefill_sessions:,} sessions and {args.prefill_guards:,} "
            f"guard rows in {time.monotonic() - t0:.0f} s"
        )
    lifecycle: dict | None = None
    if not args.no_lifecycle:
        from bench.lifecycle_seed import participants, reset_survey, seed_lifecycle, survey_open

        lifecycle = seed_lifecycle(url, WAVE, args.seed, args.reseed)
        result["lifecycle_seed"] = lifecycle
        if "surveys" in phases:
            gone = reset_survey(url, args.survey, WAVE)
            if gone:
                log(f"{gone:,} answers to survey {args.survey} of an earlier run removed")

    rng = random.Random(f"portal-load:{args.seed}")
    readers_from_index = args.no_lifecycle
    n_people = (args.sessions if readers_from_index else 0) + args.signin_people + 1
    log(f"choosing {n_people:,} registrants at random")
    people = sample_people(url, n_people, rng)
    if readers_from_index:
        readers = [nik for nik, _ in people[: args.sessions]]
        reader_states = None
        people = people[args.sessions :]
    else:
        everyone = participants(url, WAVE)
        if len(everyone) < args.sessions:
            raise SystemExit(f"wave {WAVE} has {len(everyone):,} participants only")
        chosen = rng.sample(everyone, args.sessions)
        readers = [nik for nik, _ in chosen]
        reader_states = {}
        for _, state in chosen:
            reader_states[state] = reader_states.get(state, 0) + 1
        # The sample answer checked for its lifecycle: a TRAINED participant's.
        trained = next(i for i, (_, state) in enumerate(chosen) if state == "TRAINED")
        readers.insert(0, readers.pop(trained))
    first, signers = people[0], people[1:]
    survey_niks: list[str] = []
    if "surveys" in phases:
        taken = set(readers)
        open_niks = [nik for nik in survey_open(url, args.survey, WAVE) if nik not in taken]
        want = args.survey_sessions + 1
        if len(open_niks) < want:
            log(f"only {len(open_niks):,} participants with survey {args.survey} OPEN")
        survey_niks = rng.sample(open_niks, min(want, len(open_niks)))
    secret = secrets.token_urlsafe(48)
    t0 = time.monotonic()
    tokens = make_sessions(url, secret, readers)
    log(f"{len(tokens):,} sessions made in {time.monotonic() - t0:.1f} s")

    reads: dict | None = None
    surveys: dict | None = None
    signins: dict = {}
    flow: dict = {}
    phase_figures: dict = {}
    load_before: dict = {}
    me_lifecycle: dict | None = None
    with SimulatorProcess(args.seed) as sim:
        partners = partners_toml(sim.base_url, args.notifier_max_rps)
        env = dict(
            os.environ,
            PRAKERJA_DATABASE_URL=url,
            PRAKERJA_PARTNERS=str(partners),
            PRAKERJA_SIMULATOR_API_KEY="simulator",
            PRAKERJA_PORTAL_SECRET=secret,
        )
        env.pop("PREFECT_API_URL", None)  # no partner-failure events to a Prefect API
        extra = [nodelay_path()] if args.nodelay else []
        extra += [args.portal_pythonpath] if args.portal_pythonpath else []
        if extra:
            env["PYTHONPATH"] = os.pathsep.join([*extra, *filter(None, [env.get("PYTHONPATH")])])
        server = uvicorn_flavour(env)
        port = args.port or free_port()
        with (
            portal_process(env, port, args.workers, args.portal_root) as (proc, base),
            ProcessTree(proc.pid) as tree,
            ProcessTree(sim.process.pid) as sim_tree,
        ):
            entry = check_me(base, tokens[0])
            log(f"GET /api/me answers as it should (wave {WAVE}: {entry['outcome']})")
            if not readers_from_index:
                me_lifecycle = check_lifecycle(base, tokens[0])
                log(f"its lifecycle: {me_lifecycle}")

            if "reads" in phases:
                script = wrk_script(tokens, args.read_threads, args.read_requests_per_connection)
                if args.read_warmup_seconds:
                    log(f"warming up reads for {args.read_warmup_seconds} s")
                    run_wrk(
                        base,
                        script,
                        args.read_threads,
                        args.read_connections,
                        args.read_warmup_seconds,
                    )
                load_before["reads"] = load_average()
                log(
                    f"reads: wrk -t{args.read_threads} -c{args.read_connections} "
                    f"-d{args.read_seconds}s over {len(tokens):,} sessions "
                    f"(load average {load_before['reads']})"
                )
                phase = Phase(tree, sim_tree, url)
                with profiled(proc.pid, "reads", args.profile):
                    reads = run_wrk(
                        base, script, args.read_threads, args.read_connections, args.read_seconds
                    )
                phase_figures["reads"] = with_others(phase.end(), reads["cpu_s"])
                reads["per_s"] = reads["requests"] / (reads["duration_us"] / 1e6)
                log(f"reads: {reads['per_s']:,.0f}/s, p99 {reads['p99_us'] / 1000:.1f} ms")

            if "surveys" in phases and survey_niks:
                # Made now, so that each session's one request finds it fresh (no
                # last_seen write first), as a person answering right after signing in.
                survey_tokens = insert_sessions(url, survey_niks)
                by_hand = check_survey(base, survey_tokens.pop(0), args.survey)
                if not by_hand["available"]:
                    log(f"POST /api/surveys/{args.survey}: no such route yet; no survey phase")
                    surveys = {"available": False}
                else:
                    answers0 = count_answers(url, args.survey)
                    script = survey_script(survey_tokens, args.read_threads, args.survey)
                    load_before["surveys"] = load_average()
                    log(
                        f"surveys: wrk -t{args.read_threads} -c{args.survey_connections} "
                        f"-d{args.survey_seconds}s, {len(survey_tokens):,} sessions with "
                        f"survey {args.survey} open (load average {load_before['surveys']})"
                    )
                    phase = Phase(tree, sim_tree, url)
                    with profiled(proc.pid, "surveys", args.profile):
                        surveys = run_wrk(
                            base,
                            script,
                            args.read_threads,
                            args.survey_connections,
                            args.survey_seconds,
                            path=f"/api/surveys/{args.survey}",
                            name="wrk-surveys",
                        )
                    phase_figures["surveys"] = with_others(phase.end(), surveys["cpu_s"])
                    seconds = surveys["duration_us"] / 1e6
                    surveys["answered_per_s"] = surveys["status"]["201"] / seconds
                    surveys["per_s"] = surveys["requests"] / seconds
                    surveys["stored"] = count_answers(url, args.survey) - answers0
                    surveys["available"] = True
                    log(
                        f"surveys: {surveys['answered_per_s']:,.0f} answered/s, p99 "
                        f"{surveys['p99_us'] / 1000:.1f} ms, {surveys['status']}, "
                        f"{surveys['stored']:,} stored"
                    )

            if "signins" in phases:
                one = check_signin(base, sim.base_url, *first)
                load_before["signins"] = load_average()
                log(
                    f"one sign-in by hand took {one * 1000:.0f} ms; now Locust "
                    f"(load average {load_before['signins']})"
                )
                phase = Phase(tree, sim_tree, url)
                with profiled(proc.pid, "signins", args.profile):
                    signins = run_locust(
                        base,
                        sim.base_url,
                        signers,
                        args.signin_users,
                        args.signin_spawn_rate,
                        args.signin_seconds,
                        args.poll_seconds,
                        args.code_reader,
                    )
                phase_figures["signins"] = with_others(phase.end(), signins["_cpu_s"])
                flow = signins.get("signin") or {}
                log(
                    f"sign-ins: {flow.get('per_s')}/s, p99 {flow.get('p99_ms')} ms, "
                    f"{flow.get('failures')} failed"
                )
            peak_rss_mb = round(tree.peak_rss / 2**20)
            peak_process_rss_mb = round(tree.peak_process_rss / 2**20)
            portal_processes = tree.processes

    failures = (
        (flow.get("failures") or 0)
        + sum(v["failures"] for k, v in signins.items() if not k.startswith("_") and k != "signin")
        + sum(signins.get("_exceptions", {}).values())
    )
    if reads is not None:
        result.update(
            {
                "reads_per_s": round(reads["per_s"]),
                "reads_p50_ms": round(reads["p50_us"] / 1000, 1),
                "reads_p99_ms": round(reads["p99_us"] / 1000, 1),
                "reads_max_ms": round(reads["max_us"] / 1000, 1),
                "reads": reads["requests"],
                "reads_non_2xx": reads["non_2xx"],
                "reads_socket_errors": socket_errors(reads),
            }
        )
    result["reads_of"] = "portal index" if readers_from_index else "participants"
    result["reads_lifecycle"] = me_lifecycle
    result["reads_sessions_by_state"] = reader_states
    if surveys is not None and surveys.get("available"):
        result["surveys"] = {
            "answered_per_s": round(surveys["answered_per_s"]),
            "requests_per_s": round(surveys["per_s"]),
            "p50_ms": round(surveys["p50_us"] / 1000, 1),
            "p99_ms": round(surveys["p99_us"] / 1000, 1),
            "max_ms": round(surveys["max_us"] / 1000, 1),
            "requests": surveys["requests"],
            "status": surveys["status"],
            "stored": surveys["stored"],
            "sessions": len(survey_niks) - 1,
            "sessions_came_round": surveys["wrapped"],
            "socket_errors": socket_errors(surveys),
        }
    elif surveys is not None:
        result["surveys"] = {"available": False}
    if "signins" in phases:
        result.update(
            {
                "signins_per_s": flow.get("per_s"),
                "signins": flow.get("requests"),
                "signin_p50_ms": flow.get("p50_ms"),
                "signin_p99_ms": flow.get("p99_ms"),
                "failures": failures,
                "signin_requests": {
                    k: {x: v[x] for x in ("requests", "failures", "per_s", "p50_ms", "p99_ms")}
                    for k, v in signins.items()
                    if not k.startswith("_") and k != "signin"
                },
                "signin_errors": signins.get("_errors", {}) | signins.get("_exceptions", {}),
            }
        )
    result.update(
        {
            "load_generator_cpu_s": {
                "wrk": reads["cpu_s"] if reads else None,
                "wrk_surveys": surveys.get("cpu_s") if surveys else None,
                "locust": signins.get("_cpu_s"),
            },
            "load_average_before": load_before,
            "phases": phase_figures,
            "portal_peak_rss_mb": peak_rss_mb,
            "portal_peak_process_rss_mb": peak_process_rss_mb,
            "portal_processes": portal_processes,
            "workers": args.workers,
            "server": server,
            "cores": psutil.cpu_count(logical=True),
            "settings": {
                "phases": sorted(phases),
                "sessions": len(tokens),
                "read_seconds": args.read_seconds,
                "read_warmup_seconds": args.read_warmup_seconds,
                "read_threads": args.read_threads,
                "read_connections": args.read_connections,
                "prefill_sessions": args.prefill_sessions,
                "prefill_guards": args.prefill_guards,
                "read_requests_per_connection": args.read_requests_per_connection,
                "survey": args.survey,
                "survey_seconds": args.survey_seconds,
                "survey_connections": args.survey_connections,
                "signin_seconds": args.signin_seconds,
                "signin_users": args.signin_users,
                "signin_spawn_rate": args.signin_spawn_rate,
                "poll_seconds": args.poll_seconds,
                "code_reader": args.code_reader,
                "notifier_max_rps": args.notifier_max_rps,
                "code_window_ms": int(os.environ.get("PRAKERJA_PORTAL_CODE_WINDOW_MS") or 50),
                "seed": args.seed,
                "profiled": args.profile,
                "nodelay": args.nodelay,
                "portal_pythonpath": args.portal_pythonpath,
                "portal_commit": portal_commit(args.portal_root),
            },
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
