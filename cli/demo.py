"""`prakerja demo`: a whole demo wave on the embedded defaults."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from cli.root import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PENDING,
    _prefect_api_url,
    _progress,
    _runtime,
    main,
    settings,
    use_settings,
)
from cli.wave import run_wave_command


@main.command()
@click.option("--registrants", "-n", type=click.IntRange(10), default=100_000, show_default=True)
@click.option("--seed", "-s", default="demo", show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default="var/demo", show_default=True)
def demo(registrants: int, seed: str, workdir: str) -> None:
    """A whole demo wave: synthetic export, local simulator, Prefect run, the funnel."""
    from partners.config import simulator_config
    from partners.simulator.generate import generate_export
    from partners.simulator.server import SimulatorProcess
    from rules.funnel import demo_quota
    from rules.settings import jakarta_today

    started = time.monotonic()
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / "prakerja-demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    # The demo's own database, handed to everything it runs (no environment variable).
    demo_db = f"sqlite:///{db_path.resolve()}"
    use_settings(settings().model_copy(update={"database_url": demo_db}))
    export = work / "wave-1.csv"
    today = jakarta_today()
    click.echo(f"demo: generating {registrants:,} registrants (seed {seed!r})", err=True)
    generate_export(
        export,
        registrants=registrants,
        seed=seed,
        reference_date=today,
        progress=_progress("generate", registrants),
    )
    quota = demo_quota(registrants)
    reconciled = False
    with SimulatorProcess(seed) as sim:
        click.echo(
            f"demo: partner simulator at {sim.base_url}; running wave 1 "
            f"(quota {quota:,}) under Prefect",
            err=True,
        )
        code = run_wave_command(
            wave_id=1,
            registrants=str(export),
            quota=quota,
            lottery_seed=f"demo-{seed}",
            keep_open=False,
            draw_without_pending=False,
            flags={"reference_date": None},
            partners_config=simulator_config(sim.base_url),
        )
        if code in (EXIT_OK, EXIT_PENDING):
            reconciled = _demo_reconcile(sim.base_url)
        if code in (EXIT_OK, EXIT_PENDING):
            life = _demo_program_life(sim.base_url, today, seed)
            if life not in (EXIT_OK, EXIT_PENDING):
                code = life
    if code in (EXIT_OK, EXIT_PENDING):
        _demo_dashboard(work, seed, today)
    elapsed = time.monotonic() - started
    click.echo(f"\ndemo finished in {elapsed:.0f} s{_setup_time_note()} (exit {code}).")
    click.echo(
        "Prefect: flow run `wave-1-<YYYYmmdd-HHMMSS>` (Jakarta time; tags prakerja, wave-1) "
        "is in this machine's Prefect "
        f"database; browse it with `{_venv_command('prefect')} server start` then "
        "http://127.0.0.1:4200/runs"
        if not _prefect_api_url()
        else f"Prefect: flow run `wave-1-<YYYYmmdd-HHMMSS>` (tag wave-1) at {_ui_url()}/runs"
    )
    click.echo(
        f"Inspect it: PRAKERJA_DATABASE_URL={demo_db} "
        f"{_venv_command('prakerja')} wave report --wave 1"
    )
    if code in (EXIT_OK, EXIT_PENDING) and not reconciled:
        code = EXIT_ERROR
    sys.exit(code)


def _demo_reconcile(simulator_url: str) -> bool:
    """The demo wave's ledger against the issuer's statement, while the simulator that
    holds that statement still runs (it lives and dies with the demo: a later `wave
    reconcile` on the demo database has no issuer to ask)."""
    from cli import render
    from partners.config import simulator_config
    from readmodels.reporting import reconcile

    rt = _runtime(simulator_config(simulator_url))
    result = reconcile(rt.sessions, rt.partners.issuer, 1)
    click.echo("")
    render.reconcile(result)
    click.echo(
        "(The statement is the demo simulator's and ends with it: reconcile the demo wave "
        "here, not later with `wave reconcile`.)"
    )
    return bool(result["ok"])


# The program's life after the wave, in payout runs at these days after the credit: the
# first purchases and completions, the deadline (day 30) and its revocations, then the
# four monthly installments and the surveys (about five months).
DEMO_PAYOUT_DAYS = (12, 31, 45, 75, 105, 140)
DEMO_SURVEY_SHARE = 0.6  # of those paid installment k, who answer survey k on the dashboard


def _demo_program_life(simulator_url: str, credited_on, seed: str) -> int:
    """Payout runs at as-of dates over about five months, the simulator's clock moved to
    each; between runs some participants answer the survey their last installment opened
    (as the dashboard would record it); then the lifecycle funnel and money by benefit."""
    from datetime import timedelta

    import requests

    from cli.payout import print_report, run_payout_command
    from partners.config import simulator_config
    from readmodels.payouts import payout_report

    config = simulator_config(simulator_url)
    code = EXIT_OK
    click.echo("\ndemo: the program after the balance: payout runs over five months", err=True)
    for day in DEMO_PAYOUT_DAYS:
        as_of = credited_on + timedelta(days=day)
        requests.post(
            f"{simulator_url}/_admin/clock",
            json={"now": f"{as_of.isoformat()}T01:00:00+07:00"},
            timeout=10,
        ).raise_for_status()
        _demo_answer_surveys(as_of, seed)
        click.echo(f"demo: payout run {as_of} (day {day} after the credit)", err=True)
        code = run_payout_command(as_of, quiet=True, partners_config=config)
        if code not in (EXIT_OK, EXIT_PENDING):
            return code
        if day == DEMO_PAYOUT_DAYS[2]:
            _demo_new_listings(simulator_url, seed)
    report = payout_report(_runtime().sessions)
    click.echo("")
    print_report(report)
    return code


DEMO_LISTED_SHARE = 0.02  # participants an agency lists, or the registry finds deceased, later


def _demo_new_listings(simulator_url: str, seed: str) -> None:
    """Life goes on: a few participants take a civil-service job or die after their first
    installment; the next re-checks stop their later payments."""
    import hashlib

    import requests
    from sqlalchemy import select

    from models.tables import Participant

    P = Participant.__table__  # type: ignore[attr-defined]
    with _runtime().sessions() as session:
        niks = list(session.execute(select(P.c.nik)).scalars())
    for nik in niks:
        draw = hashlib.sha256(f"{seed}:listed:{nik}".encode()).digest()[0] / 256
        if draw < DEMO_LISTED_SHARE * 0.75:
            route = "/_admin/agencies/civil-service/list"
        elif draw < DEMO_LISTED_SHARE:
            route = "/_admin/registry/deceased"
        else:
            continue
        requests.post(f"{simulator_url}{route}", json={"nik": nik}, timeout=10).raise_for_status()


def _demo_answer_surveys(as_of, seed: str) -> None:
    """Survey k answered by a seeded share of those whose installment k was paid."""
    import hashlib
    import json as jsonlib

    from sqlalchemy import select

    from models.queries import utcnow
    from models.tables import Payment, SurveyResponse

    Y = Payment.__table__  # type: ignore[attr-defined]
    S = SurveyResponse.__table__  # type: ignore[attr-defined]
    rt = _runtime()
    with rt.sessions() as session, session.begin():
        conn = session.connection()
        answered = set(conn.execute(select(S.c.registrant_id, S.c.survey)).tuples())
        rows = conn.execute(
            select(Y.c.registrant_id, Y.c.installment).where(
                Y.c.benefit == "incentive", Y.c.status == "PAID"
            )
        ).tuples()
        new = []
        for rid, k in rows:
            if (rid, k) in answered or k > 3:
                continue
            draw = hashlib.sha256(f"{seed}:{rid}:{k}".encode()).digest()[0] / 256
            if draw < DEMO_SURVEY_SHARE:
                new.append(
                    {
                        "registrant_id": rid,
                        "survey": k,
                        "answers_json": jsonlib.dumps(_demo_answers(draw)),
                        "answered_at": utcnow(),
                    }
                )
        if new:
            conn.execute(S.insert(), new)


def _demo_answers(draw: float) -> dict:
    """A seeded answer from the survey's fixed choices (portal.md, "Surveys")."""
    from portal.lifecycle import CHOICES

    answers = {}
    for i, (name, choices) in enumerate(CHOICES.items()):
        answers[name] = choices[int(draw * 997 * (i + 1)) % len(choices)]
    answers["comment"] = ""
    return answers


def _setup_time_note() -> str:
    """Whether the time includes creating .venv: `./prakerja` times its setup step and
    passes it on (PRAKERJA_SETUP_SECONDS); the demo's own clock starts after it."""
    setup = settings().setup_seconds
    if setup is None:
        return " (the demo itself; any setup of .venv before it is not included)"
    if setup < 5:
        return " (.venv already existed: no setup time)"
    return f" (the demo itself; creating .venv took another {setup} s before it, once)"


def _venv_command(name: str) -> str:
    """How to call a command of this program's environment (`.venv/bin/prefect`) from
    here: the environment's own bin folder, relative when it is below this folder."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        return name
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _demo_participants() -> list[tuple[str, str]]:
    """Demo participants worth signing in as after the payout runs: one with a survey
    open (to answer it, then see it paid after the next run), one stopped by a re-check,
    one revoked, one whose installment failed at the payment partner."""
    from sqlalchemy import and_, exists, select

    from models.tables import Participant, Payment, Registrant, SurveyResponse

    P = Participant.__table__  # type: ignore[attr-defined]
    Y = Payment.__table__  # type: ignore[attr-defined]
    S = SurveyResponse.__table__  # type: ignore[attr-defined]
    R = Registrant.__table__  # type: ignore[attr-defined]
    has_phone = exists().where(R.c.id == P.c.registrant_id, R.c.phone.is_not(None))
    paid = Y.alias("paid")
    open_survey = exists().where(
        paid.c.registrant_id == P.c.registrant_id,
        paid.c.benefit == "incentive",
        paid.c.status == "PAID",
        paid.c.installment <= 3,
        ~exists()
        .where(and_(S.c.registrant_id == P.c.registrant_id, S.c.survey == paid.c.installment))
        .correlate(P, paid),
    )
    failed = exists().where(Y.c.registrant_id == P.c.registrant_id, Y.c.status == "FAILED")
    wanted = [
        ("a survey open: answer it, then run the next payout run", [
            P.c.state.in_(["TRAINED", "COMPLETED"]), open_survey]),
        ("payments stopped by a re-check", [P.c.state == "STOPPED"]),
        ("card revoked", [P.c.state == "REVOKED"]),
        ("an installment failed at the payment partner", [failed]),
    ]  # fmt: skip
    picks = []
    with _runtime().sessions() as session:
        for what, where in wanted:
            nik = session.execute(
                select(P.c.nik).where(*where, has_phone).order_by(P.c.registrant_id).limit(1)
            ).scalar()
            if nik is not None:
                picks.append((nik, f"CREDITED; {what}"))
    return picks


def _demo_dashboard(work: Path, seed: str, credited_on=None) -> None:
    """Announces the demo wave and says how to sign in to the dashboard as a registrant."""
    from tasks.audit import Actor
    from tasks.portal_index import announce_wave, demo_sign_ins

    rt = _runtime()
    announce_wave(  # an announcement like any other: in the audit trail
        rt.sessions,
        1,
        "[id] Demo: hasil gelombang 1 sudah diumumkan. [en] Demo: wave 1 results are out.",
        actor=Actor.here(None),
    )
    people = demo_sign_ins(rt.sessions, 1)
    # The participants' descriptions say more than "CREDITED" for the same NIK.
    people = list({**dict(people), **dict(_demo_participants())}.items())
    guide = work / "try-the-dashboard.txt"
    db = settings().database_url
    lines = [
        "Try the registrant dashboard on the demo wave (wave 1 is announced).",
        "",
        "1. The partners, with the message gateway that receives sign-in codes:",
        f"     ./prakerja simulator --seed {seed}",
        "2. The dashboard, in another terminal:",
        f"     PRAKERJA_DATABASE_URL={db} ./prakerja portal",
        "3. Open http://127.0.0.1:8780/ and sign in with one of these synthetic demo NIKs:",
        *(f"     {nik}   ({what})" for nik, what in people),
        "4. Read the code the gateway received, in a third terminal:",
        "     ./prakerja simulator-messages --last 1",
    ]
    if credited_on is not None:
        from datetime import timedelta

        next_run = credited_on + timedelta(days=DEMO_PAYOUT_DAYS[-1] + 1)
        lines += [
            "5. As the participant with a survey open: answer it (Survei / Surveys on the",
            "   status page), then run the next payout run with the simulator of step 1",
            "   still serving, and reload the status page: the survey payment is paid.",
            f"     PRAKERJA_DATABASE_URL={db} ./prakerja payout run --as-of {next_run}",
        ]
    lines.append("")
    guide.write_text("\n".join(lines), encoding="utf-8")
    click.echo(
        "\nwave 1 is announced on the registrant dashboard. To sign in as a demo registrant:\n"
        f"  ./prakerja simulator --seed {seed}        # terminal 1: partners + message gateway\n"
        f"  PRAKERJA_DATABASE_URL={db} ./prakerja portal   # terminal 2\n"
        "  open http://127.0.0.1:8780/ with a demo NIK listed in "
        f"{guide}\n"
        "  ./prakerja simulator-messages --last 1   # the sign-in code the gateway received"
    )


def _ui_url() -> str:
    return (_prefect_api_url() or "").removesuffix("/").removesuffix("/api")
