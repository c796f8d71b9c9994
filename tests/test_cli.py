"""The `prakerja` command as operators and outside suites use it: a real subprocess."""

from __future__ import annotations

import csv
import json
import os

import pytest

from partners.config import SIMULATOR_KEY_ENV, simulator_partners_text
from tests.cli_process import run_cli
from tests.tasks.factories import person, write_export


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    e = dict(os.environ)
    e["PRAKERJA_DATABASE_URL"] = f"sqlite:///{tmp_path}/cli.db"
    e.pop("PRAKERJA_PARTNERS", None)
    e[SIMULATOR_KEY_ENV] = "simulator"  # files of simulator_partners_text name it
    return e


def test_an_export_missing_a_column_is_refused_naming_it_and_nothing_is_written(tmp_path, env):
    export = write_export(tmp_path / "w.csv", [person(1)])
    text = export.read_text().replace("payout_account", "payout_acct")
    export.write_text(text)
    result = run_cli(
        ["wave", "run", "--wave", "1", "--registrants", str(export), "--quota", "5"], env
    )
    assert result.returncode == 2
    assert "payout_account" in result.stderr
    assert not (tmp_path / "cli.db").exists()


def test_a_partners_file_with_an_unknown_field_is_refused_naming_it(tmp_path, env):
    export = write_export(tmp_path / "w.csv", [person(1)])
    partners = tmp_path / "partners.toml"
    builtin = simulator_partners_text("http://127.0.0.1:8700")
    partners.write_text(builtin.replace("[registry]\n", "[registry]\nbach_size = 1000\n", 1))
    env["PRAKERJA_PARTNERS"] = str(partners)
    result = run_cli(
        ["wave", "run", "--wave", "1", "--registrants", str(export), "--quota", "5"], env
    )
    assert result.returncode == 2
    assert "bach_size" in result.stderr


def test_a_missing_api_key_variable_is_refused_without_printing_any_key(tmp_path, env):
    export = write_export(tmp_path / "w.csv", [person(1)])
    partners = tmp_path / "partners.toml"
    builtin = simulator_partners_text("http://127.0.0.1:8700")
    partners.write_text(
        builtin.replace(
            f'[card_issuer]\napi_key_env = "{SIMULATOR_KEY_ENV}"\n',
            '[card_issuer]\napi_key_env = "PRAKERJA_ISSUER_API_KEY"\n',
            1,
        )
    )
    env["PRAKERJA_PARTNERS"] = str(partners)
    env["PRAKERJA_REGISTRY_API_KEY"] = "sekret-registry-key-123"
    env.pop("PRAKERJA_ISSUER_API_KEY", None)
    result = run_cli(
        ["wave", "run", "--wave", "1", "--registrants", str(export), "--quota", "5"], env
    )
    assert result.returncode == 2
    assert "PRAKERJA_ISSUER_API_KEY" in result.stderr and "card_issuer" in result.stderr
    assert "sekret" not in result.stderr + result.stdout


def test_report_of_a_wave_that_does_not_exist_is_refused(env):
    result = run_cli(["wave", "report", "--wave", "9", "--json"], env)
    assert result.returncode == 2
    assert "wave 9" in result.stderr


def test_a_whole_wave_through_the_command_line(tmp_path, env):
    """run, report --json, export, reconcile --json and explain --json agree."""
    from datetime import date

    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorProcess

    export = tmp_path / "wave.csv"
    generate_export(export, registrants=600, seed="cli", reference_date=date(2026, 11, 28))
    with SimulatorProcess("cli") as sim:
        partners = tmp_path / "partners.toml"
        partners.write_text(simulator_partners_text(sim.base_url))
        env["PRAKERJA_PARTNERS"] = str(partners)
        result = run_cli(
            [
                "wave",
                "run",
                "--wave",
                "3",
                "--registrants",
                str(export),
                "--quota",
                "25",
                "--lottery-seed",
                "s",
                "--reference-date",
                "2026-11-28",
            ],
            env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "credited" in result.stdout

        report = json.loads(run_cli(["wave", "report", "--wave", "3", "--json"], env).stdout)
        for key in (
            "wave_id",
            "registrants",
            "lottery_seed_sha256",
            "funnel",
            "outcomes",
            "reasons",
            "pending",
            "credited_amount",
        ):
            assert key in report
        assert set(report["funnel"]) >= {
            "registered",
            "intake_accepted",
            "locally_eligible",
            "identity_verified",
            "eligible",
            "selected",
            "confirmed",
            "credited",
        }
        assert report["registrants"] == 600

        out = tmp_path / "outcomes.csv"
        assert run_cli(["wave", "export", "--wave", "3", "--out", str(out)], env).returncode == 0
        raw = out.read_bytes()
        assert not raw.startswith(b"\xef\xbb\xbf")
        rows = list(csv.DictReader(raw.decode().splitlines()))
        assert len(rows) == 600
        assert {r["outcome"] for r in rows} <= {"REJECTED", "CREDITED", "NOT_SELECTED"}
        credited = [r for r in rows if r["outcome"] == "CREDITED"]
        assert len(credited) == report["funnel"]["credited"]
        assert report["credited_amount"] == len(credited) * 1_000_000

        recon = run_cli(["wave", "reconcile", "--wave", "3", "--json"], env)
        assert recon.returncode == 0
        recon_doc = json.loads(recon.stdout)
        assert recon_doc["ok"] and recon_doc["ledger_count"] == len(credited)

        story = json.loads(
            run_cli(["explain", "--wave", "3", "--nik", credited[0]["nik"], "--json"], env).stdout
        )
        assert story["outcome"] == "CREDITED" and story["line"] == int(credited[0]["line"])
