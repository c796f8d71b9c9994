"""Worker processes: batches run in other processes, within the partners' limits together."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from partners.config import simulator_config
from partners.limits import SharedCircuitBreaker
from runtime import app as runtime
from runtime import workers


def where_and_limits(rt: runtime.Runtime) -> tuple[int, float, bool, str]:
    config = rt.partners_config
    assert config is not None
    return (
        os.getpid(),
        config.registry.max_rps,
        (rt.shared_limits or {}).get(config.registry.id) is not None,
        rt.engine.url.render_as_string(hide_password=False),
    )


def take_registry_slots(rt: runtime.Runtime, n: int) -> list[float]:
    """Takes n calls' worth of the registry's shared rate; when each was granted."""
    limiter = (rt.shared_limits or {})["registry"][0]
    granted = []
    for _ in range(n):
        limiter.acquire()
        granted.append(time.monotonic())
    return granted


@pytest.fixture
def configured(tmp_path, monkeypatch):
    monkeypatch.delenv("PRAKERJA_TASK_RUNNER", raising=False)
    monkeypatch.delenv("PRAKERJA_SHARED_RATE_LIMITS", raising=False)
    config = simulator_config("http://127.0.0.1:9")
    url = f"sqlite:///{tmp_path / 'w.db'}"
    runtime.configure(database=url, partners_config=config)
    yield config, url
    runtime.reset()


def test_jobs_run_in_worker_processes_that_share_each_partner_limit(configured):
    config, url = configured

    pids = {workers.run(where_and_limits, workers=2)[0] for _ in range(6)}
    pid, rps, shared, database = workers.run(where_and_limits, workers=2)

    assert os.getpid() not in pids and pid != os.getpid()
    assert rps == config.registry.max_rps and shared
    assert database == url  # the same program database
    assert runtime.current().shared_limits is None  # only the workers' clients use them


def test_workers_together_keep_within_a_partners_max_rps(tmp_path):
    config = simulator_config("http://127.0.0.1:9")
    rps = 20.0
    config = replace(config, registry=replace(config.registry, max_rps=rps, max_concurrency=1))
    runtime.configure(database=f"sqlite:///{tmp_path / 'w.db'}", partners_config=config)
    try:
        workers.run(where_and_limits, workers=2)  # both workers up before the clock matters
        with ThreadPoolExecutor(2) as pool:
            runs = list(
                pool.map(lambda _: workers.run(take_registry_slots, 10, workers=2), range(2))
            )
    finally:
        runtime.reset()
    granted = sorted(t for run in runs for t in run)
    # 20 calls at 20 a second after a burst of 1: at least 19 / 20 s, across both.
    assert granted[-1] - granted[0] >= (len(granted) - 1) / rps - 0.02
    assert all(run for run in runs)


def test_warm_up_starts_the_workers_that_later_batches_run_in(configured):
    workers.warm_up(2)  # returns at once; the workers start meanwhile
    deadline = time.monotonic() + 60
    while workers.peak_rss_mb() is None or len(workers._pool._processes) < 2:
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)
    started = set(workers._pool._processes)

    pids = {workers.run(where_and_limits, workers=2)[0] for _ in range(6)}
    assert pids <= started  # the same processes, not new ones


def test_warm_up_without_workers_starts_nothing(configured):
    workers.shutdown()
    workers.warm_up(0)
    assert workers._pool is None


def test_no_workers_runs_in_the_calling_process(configured):
    config, _url = configured

    pid, rps, shared, _database = workers.run(where_and_limits, workers=0)

    assert pid == os.getpid() and rps == config.registry.max_rps and not shared


def test_dask_and_prefect_limits_keep_batches_in_the_calling_process():
    from runtime.execution import Execution

    assert Execution(worker_processes=4).workers() == 4
    assert Execution(worker_processes=1).workers() == 0
    dask = Execution(task_runner="dask", dask_address="tcp://h:8786", worker_processes=4)
    assert dask.workers() == 0
    assert Execution(partner_limits="prefect", worker_processes=4).workers() == 0


def test_the_execution_comes_from_a_deployments_environment():
    from runtime.execution import Execution

    env = {
        "PRAKERJA_TASK_RUNNER": "dask",
        "PRAKERJA_DASK_ADDRESS": "tcp://10.0.0.5:8786",
        "PRAKERJA_WORKER_PROCESSES": "3",
        "PRAKERJA_SHARED_RATE_LIMITS": "1",
    }
    got = Execution.from_env(env)
    assert (got.task_runner, got.dask_address, got.partner_limits) == (
        "dask",
        "tcp://10.0.0.5:8786",
        "prefect",
    )
    assert Execution.from_env({}) == Execution()
    # It travels with the run: a copy rebuilt elsewhere (a Dask worker) is the same.
    assert Execution.model_validate(got.model_dump()) == got


@pytest.mark.parametrize("raw", ["two", "-1"])
def test_a_bad_worker_count_names_the_variable(raw):
    from pydantic import ValidationError

    from runtime.execution import Execution

    with pytest.raises((ValueError, ValidationError), match="PRAKERJA_WORKER_PROCESSES|worker_"):
        Execution.from_env({"PRAKERJA_WORKER_PROCESSES": raw})


def test_dask_without_an_address_is_refused():
    from pydantic import ValidationError

    from runtime.execution import Execution

    with pytest.raises(ValidationError, match="dask_address"):
        Execution(task_runner="dask")


def _fail_calls(breaker, n: int) -> None:
    for _ in range(n):
        breaker.record_failure()


def test_a_breaker_opened_in_one_process_is_open_in_every_process():
    context = multiprocessing.get_context("spawn")
    breaker = SharedCircuitBreaker(3, 60.0, context=context)
    assert breaker.allow()

    other = context.Process(target=_fail_calls, args=(breaker, 3))
    other.start()
    other.join(timeout=60)

    assert other.exitcode == 0
    assert breaker.state == SharedCircuitBreaker.OPEN and not breaker.allow()
    breaker.record_success()  # a later success closes it for everyone again
    assert breaker.state == SharedCircuitBreaker.CLOSED and breaker.allow()


def log_a_nik(rt: runtime.Runtime, nik: str) -> int:
    import logging

    logging.getLogger("prakerja.partners").warning("registry: no answer for %s", nik)
    return os.getpid()


def test_a_workers_warnings_reach_stderr_masked(configured, capfd):
    nik = "3171011501900001"
    pid = workers.run(log_a_nik, nik, workers=2)
    workers.shutdown()  # its stderr flushed
    err = capfd.readouterr().err
    assert pid != os.getpid()
    assert "registry: no answer for 3171" in err and "WARNING" in err
    assert nik not in err


# A flow's process that starts its worker pool and dies at once, kill -9 style, before the
# workers have got through their imports to their initializer: it prints their pids.
DIES_AS_ITS_WORKERS_START = """
import os, sys
from partners.config import simulator_config
from runtime import app as runtime, workers
runtime.configure(database=sys.argv[1], partners_config=simulator_config("http://127.0.0.1:9"))
workers.warm_up(2)
print(*workers._pool._processes, flush=True)
os._exit(0)
"""


def _a_live_worker(pid: int) -> bool:
    """pid is a spawned worker still running (not gone, not a zombie, not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and b"spawn_main" in cmdline


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_worker_whose_parent_died_before_it_started_exits(tmp_path):
    root = Path(__file__).resolve().parents[2]
    err = tmp_path / "parent.err"
    with open(err, "w") as stderr:
        parent = subprocess.Popen(
            [sys.executable, "-c", DIES_AS_ITS_WORKERS_START, f"sqlite:///{tmp_path / 'w.db'}"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        line = parent.stdout.readline()  # the workers keep the pipe open: no read to EOF
        parent.stdout.close()
        assert parent.wait(timeout=120) == 0, err.read_text()
    pids = [int(pid) for pid in line.split()]
    assert len(pids) == 2, err.read_text()
    try:
        deadline = time.monotonic() + 30  # a worker's own start (its imports) included
        while any(_a_live_worker(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in pids if _a_live_worker(pid)] == [], "orphaned workers linger"
    finally:
        for pid in pids:
            if _a_live_worker(pid):
                os.kill(pid, signal.SIGKILL)
