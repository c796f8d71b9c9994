"""Nothing personal reaches Prefect: after a whole wave (with partner failures, so errors
and alerts are produced too), everything the Prefect server stored for it is read back
and searched for every NIK, name, phone and account of the export."""

from __future__ import annotations

import csv
import os
from datetime import date, datetime, time
from pathlib import Path

from partners.config import RetrySettings

SEED = "pii-seed"


def _personal_values(export: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {
        "nik": set(),
        "full_name": set(),
        "phone": set(),
        "payout_account": set(),
        "kk_number": set(),
    }
    with open(export, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            for column, values in found.items():
                value = (row.get(column) or "").strip()
                # Short values ("Ani", "12") would match unrelated text: they are not
                # identifying on their own either.
                if len(value) >= 8:
                    values.add(value)
    return found


def _everything_prefect_stored() -> str:
    from prefect import get_client
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    parts: list[str] = []
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(limit=200):
            parts.append(run.model_dump_json())
        offset = 0
        while batch := client.read_task_runs(limit=200, offset=offset):
            parts += [t.model_dump_json() for t in batch]
            offset += len(batch)
        offset = 0
        while batch := client.read_logs(limit=200, offset=offset):
            parts += [log.model_dump_json() for log in batch]
            offset += len(batch)
        for artifact in client.read_artifacts(limit=200):
            parts.append(artifact.model_dump_json())
        page = client._client.post("/events/filter", json={"limit": 50}).json()
        while True:
            parts += [str(e) for e in page["events"]]
            if not page.get("next_page"):
                break
            page = client._client.get(page["next_page"]).json()
    storage = Path(os.environ["PREFECT_HOME"]) / "storage"
    if storage.exists():
        parts += [p.read_bytes().decode("latin-1") for p in storage.rglob("*") if p.is_file()]
    return "\n".join(parts)


def test_no_personal_data_reaches_prefect(prefect_server, sessions, tmp_path):
    from dataclasses import replace

    from cli import run_wave_command
    from partners.config import simulator_config
    from partners.simulator.faults import faults_from_dict
    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorThread

    export = tmp_path / "wave.csv"
    generate_export(export, registrants=700, seed=SEED, reference_date=date(2026, 11, 28))
    faults = faults_from_dict(
        {"partners": {"education": {"down": True}, "registry": {"rate_missing_result": 0.3}}}
    )
    with SimulatorThread(SEED, faults=faults) as sim:
        base = simulator_config(sim.base_url)
        fast = RetrySettings(attempts=2, total_s=2, backoff_s=0.01, backoff_max_s=0.02)
        config = replace(
            base,
            registry=replace(base.registry, retry=fast),
            agencies=tuple(replace(a, retry=fast) for a in base.agencies),
        )
        code = run_wave_command(
            wave_id=7,
            registrants=str(export),
            quota=30,
            lottery_seed="pii",
            keep_open=False,
            draw_without_pending=False,
            flags={"reference_date": datetime.combine(date(2026, 11, 28), time())},
            partners_config=config,
            quiet=True,
        )
    assert code == 3  # the education agency was down: pending, and alerts were raised

    stored = _everything_prefect_stored()
    assert "wave-7" in stored and "prakerja.partner.failed" in stored  # we read the right place
    assert "education" in stored
    personal = _personal_values(export)
    assert len(personal["nik"]) > 600
    for column, values in personal.items():
        leaked = sorted(v for v in values if v in stored)
        assert not leaked, f"{len(leaked)} {column} values stored by Prefect, e.g. {leaked[:1]}"
