"""What an operator's terminal shows: `wave run` (one line per stage, then the funnel;
Prefect's per-task lines only with `-v`), `simulator --write-partners`, and a README
that stands on its own. Real subprocesses, the real simulator, a real Prefect server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import date
from pathlib import Path

import pytest

from models.enums import Stage
from partners.config import SIMULATOR_KEY_ENV, load_partners_config
from tests.cli_process import PRAKERJA, run_cli

ROOT = Path(__file__).resolve().parents[1]
STAGES = [s.value for s in Stage]


@pytest.fixture
def simulator(tmp_path):
    """`prakerja simulator --port 0 --write-partners FILE`: the file, once it exists."""
    partners = tmp_path / "partners.toml"
    log = (tmp_path / "simulator.log").open("w")
    proc = subprocess.Popen(
        PRAKERJA
        + ["simulator", "--port", "0", "--seed", "surfaces", "--write-partners", str(partners)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not partners.exists():
            assert proc.poll() is None, (tmp_path / "simulator.log").read_text()
            assert time.monotonic() < deadline, "no partners file within 120 s"
            time.sleep(0.1)
        yield partners, (tmp_path / "simulator.log")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_the_simulator_writes_a_partners_file_for_its_own_port(simulator):
    partners, log = simulator
    port = re.search(r"partner simulator on http://127\.0\.0\.1:(\d+)", log.read_text()).group(1)
    config = load_partners_config(partners, env={SIMULATOR_KEY_ENV: "any-key"})
    sections = [config.registry, *config.agencies, config.card_issuer, config.notifier]
    sections += list(config.payment_providers.values())
    assert len(sections) == 15
    for section in sections:
        assert section.base_url.startswith(f"http://127.0.0.1:{port}/"), section.base_url
        assert section.api_key == "any-key"
    # The file needs its key variable, as every file in PRAKERJA_PARTNERS does.
    from partners.config import ConfigError

    with pytest.raises(ConfigError, match=SIMULATOR_KEY_ENV):
        load_partners_config(partners, env={})
    # And it reaches the simulator: the card issuer's statement over real HTTP.
    from partners.wiring import build_partners

    clients = build_partners(config)
    try:
        assert list(clients.issuer.statement("wave-1")) == []
        answers = clients.registry.verify(
            [
                {
                    "ref": "r1",
                    "nik": "3171010101900001",
                    "kk_number": "3171010101900002",
                    "full_name": "Budi",
                    "birth_date": "1990-01-01",
                }
            ]
        )
        from partners.client import PartnerFailure

        assert set(answers) == {"r1"} and not isinstance(answers["r1"], PartnerFailure)
    finally:
        clients.close()


@pytest.fixture
def wave_env(prefect_server, simulator, tmp_path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    from partners.simulator.generate import generate_export

    partners, _ = simulator
    env = dict(os.environ)
    env["PRAKERJA_DATABASE_URL"] = f"sqlite:///{tmp_path / 'program.db'}"
    env["PRAKERJA_PARTNERS"] = str(partners)
    env[SIMULATOR_KEY_ENV] = "simulator"
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    env["PRAKERJA_BATCH_SIZE"] = "200"  # several batches per partner stage
    # Prefect's default level, as an operator has it (the test session quiets it): the
    # per-task INFO lines are there to be hidden, or shown with -v.
    env["PREFECT_LOGGING_LEVEL"] = "INFO"
    env["COLUMNS"] = "120"
    generate_export(
        tmp_path / "wave.csv", registrants=600, seed="surfaces", reference_date=date(2026, 11, 28)
    )
    return env


def _wave_run(tmp_path, env, wave_id: int, *flags: str) -> subprocess.CompletedProcess:
    args = [*flags, "wave", "run", "--wave", str(wave_id), "--registrants"]
    args += [str(tmp_path / "wave.csv"), "--quota", "20", "--lottery-seed", "s"]
    args += ["--reference-date", "2026-11-28"]
    result = run_cli(args, env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_wave_run_shows_one_line_per_stage_then_the_funnel(tmp_path, wave_env):
    result = _wave_run(tmp_path, wave_env, 1)
    err = result.stderr
    assert "prefect.task_runs" not in err and "Finished in state" not in err, err
    assert "prefect.flow_runs" not in err, err
    assert "{" not in err and "}" not in err, err  # no dict reprs (the stages' counts)
    for stage in STAGES:
        lines = [ln for ln in err.splitlines() if ln.startswith(f"wave 1 {stage}: ")]
        assert len(lines) == 1, (stage, err)
    identity = next(ln for ln in err.splitlines() if ln.startswith("wave 1 identity: "))
    assert re.search(
        r": \d+/\d+ batches, [\d,]+ records in [\d.]+ s \([\d,]+/s\); .*\bverified [\d,]+", identity
    )
    assert int(identity.split(": ")[1].split("/")[0]) > 1  # 200 per batch: several
    out = result.stdout.rstrip().splitlines()
    assert out[-1].startswith("Credited amount: Rp"), result.stdout
    assert out[-2].startswith("└") and any("funnel" in ln for ln in out), result.stdout
    assert "\x1b[" not in err + result.stdout  # not a terminal: no live display codes


def test_wave_run_verbose_shows_prefects_task_lines(tmp_path, wave_env):
    result = _wave_run(tmp_path, wave_env, 1, "-v")
    assert "prefect.task_runs" in result.stderr and "Finished in state Completed()" in result.stderr
    assert re.search(r"^wave 1 screening: ", result.stderr, re.M), result.stderr[-3000:]


def test_the_readme_stands_on_its_own():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    readme = "".join(page.read_text(encoding="utf-8") for page in pages)
    assert "../shared" not in readme and "shared/spec" not in readme
    assert "shared/notes" not in readme


def test_a_run_left_pending_says_so_in_one_readable_line(tmp_path, wave_env, simulator):
    """Exit 3: the registry is down; the last line names the pending counts, no JSON."""
    import requests

    partners, log = simulator
    port = re.search(r"partner simulator on http://127\.0\.0\.1:(\d+)", log.read_text()).group(1)
    faults = requests.post(
        f"http://127.0.0.1:{port}/_admin/faults",
        json={"partners": {"registry": {"down": True}}},
        timeout=10,
    )
    assert faults.ok, faults.text
    fast = tmp_path / "fast-partners.toml"
    key_line = f'[registry]\napi_key_env = "{SIMULATOR_KEY_ENV}"\n'
    text = partners.read_text()
    assert key_line in text
    fast.write_text(text.replace(key_line, key_line + "retry_attempts = 1\nretry_total_s = 1\n"))
    env = {**wave_env, "PRAKERJA_PARTNERS": str(fast)}
    args = ["wave", "run", "--wave", "1", "--registrants", str(tmp_path / "wave.csv")]
    result = run_cli(args + ["--quota", "20", "--reference-date", "2026-11-28"], env)
    assert result.returncode == 3, result.stderr[-3000:]
    last = result.stderr.rstrip().splitlines()[-1]
    assert re.fullmatch(
        r"wave 1: [\d,]+ registrants pending \(PENDING_IDENTITY [\d,]+\); rerun to pick them up",
        last,
    ), last
    assert "{" not in result.stderr and "prefect.task_runs" not in result.stderr


@pytest.mark.slow  # a whole demo, with Prefect's temporary server
def test_the_demo_reconciles_while_its_simulator_runs_and_says_what_its_time_counts(tmp_path):
    """A small demo on Prefect's temporary server (as on a fresh machine): it prints its
    own reconciliation, a Prefect command that exists, and whether .venv's setup counts."""
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env["PRAKERJA_SETUP_SECONDS"] = "41"  # as ./prakerja passes it after creating .venv
    env["PREFECT_LOGGING_LEVEL"] = "INFO"  # Prefect's default: its task lines exist, unshown
    env["COLUMNS"] = "120"
    result = run_cli(["demo", "-n", "400", "--workdir", str(tmp_path / "demo")], env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "ledger against the card issuer statement" in out and "Reconciled: OK" in out
    assert out.index("funnel") < out.index("Reconciled: OK") < out.index("demo finished")
    assert "creating .venv took another 41 s before it" in out
    hint = next(ln for ln in out.splitlines() if ln.startswith("Prefect: "))
    command = re.search(r"`(\S+) server start`", hint).group(1)
    assert Path(command).name == "prefect" and (ROOT / command).exists(), hint
    for stage in STAGES:
        assert re.search(rf"^wave 1 {stage}: ", result.stderr, re.M), result.stderr
    assert "prefect.task_runs" not in result.stderr
    # The demo's announcement is an operator action like `wave announce`: audited.
    demo_db = f"sqlite:///{tmp_path / 'demo' / 'prakerja-demo.db'}"
    trail = run_cli(["audit", "--wave", "1", "--json"], env, database_url=demo_db)
    assert [row["action"] for row in json.loads(trail.stdout)] == [
        "wave.created",
        "wave.run",
        "wave.announced",
    ], trail.stderr
