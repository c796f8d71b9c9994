"""A real `prefect server start` on loopback, a local webhook receiver, and helpers to run
`prakerja` and Prefect commands against them as subprocesses (as an operator would).

Everything that runs flows or emits events runs in a subprocess pointed at this server, so
this test process never mixes it up with the in-process test harness of other tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The server settings of ../shared/notes/prefect-3.9.md, plus no UI and no scheduler
# (schedules are checked as data; a cron firing during the tests would only add noise).
SERVER_ENV = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
}


def free_port() -> int:
    from partners.simulator.server import free_port as pick

    return pick()


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait_s: float = 15) -> None:
    """Stops a process this suite started, and its own children (its session)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=wait_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def wait_until(check: Callable[[], object], timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class PrefectServer:
    api_url: str
    home: Path
    log: Path

    def client(self):
        """A sync Prefect client for this server (not the process's configured one)."""
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(api=self.api_url)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> PrefectServer:
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    env = {**os.environ, **SERVER_ENV, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    proc = start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        log,
    )
    api = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prefect server exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{api}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, 120, "prefect server start", every=0.5)
        yield PrefectServer(api, home, log)
    finally:
        stop(proc)


@dataclass
class Notification:
    arrived: float  # time.time()
    subject: str
    body: str
    raw: str


@dataclass
class Receiver:
    url: str
    received: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def all(self) -> list[Notification]:
        with self.lock:
            return list(self.received)

    def wait_for(self, *needles: str, timeout: float = 30) -> Notification:
        def find():
            for n in self.all():
                text = n.subject + "\n" + n.body
                if all(needle in text for needle in needles):
                    return n
            return None

        return wait_until(find, timeout, f"a notification with {needles}")


@pytest.fixture(scope="session")
def receiver() -> Receiver:
    """A webhook receiver on loopback: records every JSON notification posted to it."""
    port = free_port()
    rec = Receiver(f"http://127.0.0.1:{port}/prakerja-alerts")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            raw = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
            try:
                data = json.loads(raw)
            except ValueError:
                data = {}
            with rec.lock:
                rec.received.append(
                    Notification(time.time(), data.get("subject", ""), data.get("body", ""), raw)
                )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="receiver")
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def client_home() -> str:
    return tempfile.mkdtemp(prefix="prakerja-ops-client-")


def base_env(prefect_api: PrefectServer, client_home: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_API_URL": prefect_api.api_url,
            "PREFECT_HOME": client_home,
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **extra,
        }
    )
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
