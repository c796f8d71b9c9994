"""The `prakerja` command in a subprocess, as operators and outside suites run it: the one
helper the tests use for it (python -m cli, from this checkout)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRAKERJA = [sys.executable, "-m", "cli"]


def run_cli(
    args: list[str],
    env: Mapping[str, str] | None = None,
    *,
    database_url: str | None = None,
    partners: str | os.PathLike[str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`prakerja <args>` to its end; its exit code and output (text).

    `env` is the whole environment of the command; by default this process's without
    PRAKERJA_PARTNERS (a developer's own file never leaks into a test: the built-in one,
    unless `partners` names another). `database_url` and `partners`, when given, set
    PRAKERJA_DATABASE_URL and PRAKERJA_PARTNERS over it. The command runs in a session
    of its own: past `timeout` seconds it is killed with everything it started (worker
    processes, a temporary Prefect server) and subprocess.TimeoutExpired is raised,
    carrying its output.
    """
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "PRAKERJA_PARTNERS"}
    env = dict(env)
    if database_url is not None:
        env["PRAKERJA_DATABASE_URL"] = database_url
    if partners is not None:
        env["PRAKERJA_PARTNERS"] = str(partners)
    proc = subprocess.Popen(
        [*PRAKERJA, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(proc.args, timeout, output=out, stderr=err) from None
    except BaseException:  # interrupted: leave nothing running behind the test
        _kill_group(proc)
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
