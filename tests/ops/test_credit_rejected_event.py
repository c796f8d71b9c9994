"""The card issuer refusing credits raises `prakerja.credit.rejected` (operations.md: wave,
how many), which `prakerja ops setup` turns into a notification; no personal data.

Against a real `prefect server start` (tests/ops/conftest.py), `prakerja wave run` in a
subprocess, the partner simulator over HTTP. The simulator refuses the credits of people
whose truth says so (about 0.3%): the export is cut from a bigger generated one so that
it holds a few eligible people with a good account whose credit the issuer refuses.
"""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path

import httpx
import pytest

from tests.cli_process import run_cli
from tests.ops.conftest import PrefectServer, base_env, wait_until

SEED = "rejected"
WAVE = 41  # other tests of this session's server use waves 1-3
REFERENCE = date(2026, 11, 28)
KEY_ENV = "PRAKERJA_TEST_SIMULATOR_KEY"
PERSONAL = ("nik", "kk_number", "full_name", "email", "phone", "payout_account", "birth_date")


def partners_file(path: Path, base_url: str) -> Path:
    """The built-in partners file moved to the simulator, every section naming its key."""
    builtin = Path(__file__).resolve().parents[2] / "partners" / "default_partners.toml"
    lines = []
    for line in builtin.read_text().splitlines():
        lines.append(line.replace("http://127.0.0.1:8700", base_url))
        if line.startswith("base_url"):
            lines.append(f'api_key_env = "{KEY_ENV}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def export_with_refused_credits(directory: Path, head: int = 150) -> tuple[Path, set[str]]:
    """The first `head` well-formed rows of a generated export, plus every row of a person
    the partners would find eligible with a verified account and whose credit the issuer
    refuses; returns the export and those people's NIKs."""
    from partners.simulator.generate import generate_export

    big, truth = directory / "big.csv", directory / "truth.csv"
    generate_export(big, registrants=8000, seed=SEED, reference_date=REFERENCE, truth_path=truth)
    with open(truth, newline="", encoding="utf-8") as fh:
        refused = {
            r["nik"]
            for r in csv.DictReader(fh)
            if r["intended"] == "ELIGIBLE"
            and r["account_status"] == "VERIFIED"
            and r["credit_rejected"].lower() == "true"
        }
    out = directory / f"wave-{WAVE}.csv"
    with (
        open(big, newline="", encoding="utf-8") as src,
        open(out, "w", newline="", encoding="utf-8") as dst,
    ):
        reader, writer = csv.reader(src), csv.writer(dst)
        header = next(reader)
        writer.writerow(header)
        nik = header.index("nik")
        kept = 0
        for row in reader:
            if len(row) != len(header):
                continue
            if kept < head or row[nik] in refused:
                writer.writerow(row)
                kept += 1
    return out, refused


@pytest.fixture(scope="module")
def refused_wave(prefect_api: PrefectServer, receiver, client_home, tmp_path_factory):
    from partners.simulator.server import SimulatorThread

    work = tmp_path_factory.mktemp("credit-rejected")
    export, refused = export_with_refused_credits(work)
    assert len(refused) >= 2
    with SimulatorThread(SEED) as sim:
        env = base_env(
            prefect_api,
            client_home,
            PRAKERJA_DATABASE_URL=f"sqlite:///{work}/prakerja.db",
            PRAKERJA_PARTNERS=str(partners_file(work / "partners.toml", sim.base_url)),
            PRAKERJA_ALERT_WEBHOOK_URL=receiver.url,
            **{KEY_ENV: "simulator"},
        )
        env.pop("PRAKERJA_BATCH_SIZE", None)
        setup = run_cli(["ops", "setup", "--json"], env, timeout=60)
        assert setup.returncode == 0, setup.stderr[-2000:]
        ran = run_cli(
            [
                "wave", "run", "--wave", str(WAVE), "--registrants", str(export),
                "--quota", "1000", "--lottery-seed", "refused",
                "--reference-date", REFERENCE.isoformat(),
            ],
            env,
            timeout=240,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-3000:]
        exported = work / "outcomes.csv"
        done = run_cli(["wave", "export", "--wave", str(WAVE), "--out", str(exported)], env)
        assert done.returncode == 0, done.stderr[-2000:]
    with open(exported, newline="", encoding="utf-8") as fh:
        outcomes = list(csv.DictReader(fh))
    return {
        "setup": json.loads(setup.stdout),
        "outcomes": outcomes,
        "refused": refused,
        "export": export,
    }


def _events(api: PrefectServer, name: str, resource_id: str) -> list[dict]:
    def stored():
        response = httpx.post(
            f"{api.api_url}/events/filter",
            json={
                "filter": {
                    "event": {"name": [name]},
                    "resource": {"id": [resource_id]},
                    "order": "ASC",
                },
                "limit": 50,
            },
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["events"]

    return wait_until(stored, 30, f"stored {name} events of {resource_id}", every=0.5)


def test_refused_credits_raise_the_event_with_the_counts_and_a_notification(
    prefect_api, receiver, refused_wave
):
    assert refused_wave["setup"]["automations"]["prakerja: credit rejected"] in (
        "created",
        "unchanged",
    )
    outcomes = refused_wave["outcomes"]
    rejected = [r for r in outcomes if r["reason"] == "CREDIT_REJECTED"]
    credited = [r for r in outcomes if r["outcome"] == "CREDITED"]
    assert rejected and {r["nik"] for r in rejected} <= refused_wave["refused"]

    events = _events(prefect_api, "prakerja.credit.rejected", f"prakerja.wave.{WAVE}")
    assert len(events) == 1, events  # one per run of the rollout stage
    assert events[0]["payload"] == {
        "wave_id": WAVE,
        "stage": "rollout",
        "rejected": len(rejected),
        "credited": len(credited),
    }

    note = receiver.wait_for(
        f"wave {WAVE}: the card issuer refused {len(rejected)} credits", timeout=30
    )
    assert "CREDIT_REJECTED" in note.body and "a person must look" in note.body
    with prefect_api.client() as client:
        (automation,) = client.read_automations_by_name("prakerja: credit rejected")
    assert automation.trigger.expect == {"prakerja.credit.rejected"}

    # Counts only: no NIK (nor any other value of those rows) in the event or the note.
    private = set()
    with open(refused_wave["export"], newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["nik"] in refused_wave["refused"]:
                private |= {row[c] for c in PERSONAL if len(row[c]) >= 6}
    stored = json.dumps(events) + note.raw
    assert not [v for v in private if v in stored]
