"""Starting, resuming and re-running a wave, and raising its quota: once, for every entry.

`prakerja wave run` / `raise-quota` (cli/wave.py) and the deployments' flows
(flows/operations.py) all start a wave's run here:

    start_wave_run(app, WaveRun(...), run_flow=...)   create or resume, then run_wave
    run_wave(app, wave_id, ..., run_flow=...)          lease, flow, sign-off wait, again
    raise_quota(app, wave_id, quota, ..., run_flow=...) under the lease, then the run

Each returns a `RunOutcome`: how the run ended (`RunEnd`), one line for the operator when
there is something to say, and the flow's `WaveSummary`. The CLI maps it to an exit code
and a table, a deployment's flow to its state; neither repeats the lease, the audit row
or the sign-off retry.

`run_flow` is the wave flow as the caller runs it (flows/wave.py `run_wave_flow`: a flow
run of its own from the CLI, a subflow inside a deployment's run); services/ stands
above tasks/ and below the flows that call it, so it is handed the flow, never imports it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from models.config import Execution
from models.enums import Stage, WaveStatus
from models.tables import Wave
from partners.shared_limits import ensure_partner_limits
from readmodels.summaries import WaveSummary
from rules.intake import HeaderError, MissingColumnsError
from rules.masking import error_text
from rules.pacing import Pacing
from rules.settings import SettingsError, WaveSettings, jakarta_today
from runtime.app import App
from services.lease import HeldLease, hold_wave_lease, update_wave_under_lease
from tasks import audit
from tasks.draw import QuotaError
from tasks.draw import raise_quota as raise_quota_now
from tasks.intake import check_header, file_sha256
from tasks.waves import WaveBusyError, create_or_resume_wave


class RunEnd(StrEnum):
    """How a run ended; the CLI's exit code for each is in cli/wave.py."""

    DONE = "done"  # every stage ran; nothing pending
    CLOSED = "closed"  # the wave was already closed: nothing to do
    PENDING = "pending"  # some registrants still wait on a partner: rerun later
    SIGN_OFF = "sign-off"  # nothing pending; the wave waits for sign-off before money
    BUSY = "busy"  # another live run holds the wave
    REFUSED = "refused"  # bad input (a flag, the export, the wave's state): nothing done
    FAILED = "failed"  # the run failed (its flow run says why)


@dataclass(frozen=True)
class RunOutcome:
    end: RunEnd
    wave_id: int
    message: str = ""  # one line for the operator (refusal, failure, busy, closed)
    summary: WaveSummary | None = None
    created: bool = False
    quota: tuple[int, int] | None = None  # (old, new) after a raise


class RunFlow(Protocol):
    """The wave flow as its caller runs it (flows/wave.py run_wave_flow)."""

    def __call__(self, wave_id: int, **options: Any) -> WaveSummary: ...


# After a run whose wave waits for sign-off (or a weekly run that asks for it anyway):
# wait for approvals outside the lease (a deployment pauses with a form; the CLI does not
# wait) and answer whether to run again now.
SignOffWait = Callable[[int, WaveSummary], bool]


@dataclass(frozen=True)
class WaveRun:
    """What to run: the wave, its export (required to create it), settings given for a
    new wave (a resumed one must agree with them), and how to run it."""

    wave_id: int
    registrants: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # WaveSettings fields given
    keep_open: bool | None = None  # None: the wave's own
    draw_without_pending: bool = False
    stages: list[Stage] | None = None
    pacing: Pacing | None = None
    by: str | None = None  # who, for the audit trail (default: the login user)
    via: str = "cli"


class _Refused(Exception):
    pass


def _refused(wave_id: int, message: str) -> RunOutcome:
    return RunOutcome(RunEnd.REFUSED, wave_id, message)


def closed_message(wave_id: int) -> str:
    return (
        f"wave {wave_id} is closed: nothing to do (its results: prakerja wave report "
        f"--wave {wave_id})"
    )


def _wave_row(app: App, wave_id: int) -> Wave | None:
    with app.sessions() as session:
        return session.get(Wave, wave_id)


# ---------------------------------------------------------------- start or resume
def start_wave_run(
    app: App,
    request: WaveRun,
    *,
    run_flow: RunFlow,
    on_started: Callable[[Wave, bool], None] | None = None,
    on_lost: Callable[[HeldLease], None] | None = None,
    sign_off: SignOffWait | None = None,
    under_lease: Callable[[HeldLease], None] | None = None,
) -> RunOutcome:
    """Creates the wave (from its export and settings) or resumes it, then runs it
    (`run_wave`). Bad input is refused before anything is written; the wave's creation is
    audited in its own transaction, the run once the lease is held (a run refused as
    busy is not audited)."""
    wave_id = request.wave_id
    try:
        wave_row, created, given = _create_or_resume(app, request)
    except _Refused as exc:
        return _refused(wave_id, str(exc))
    if under_lease is None and wave_row.status == WaveStatus.CLOSED:
        return RunOutcome(RunEnd.CLOSED, wave_id, closed_message(wave_id))
    keep_open = wave_row.keep_open if request.keep_open is None else request.keep_open

    def started(held: HeldLease) -> None:
        # Only now, with the lease held: a run refused as busy resumed nothing.
        if on_started is not None:
            on_started(wave_row, created)
        _audit_run(app, request, wave_row, created, given, keep_open)
        if under_lease is not None:
            under_lease(held)
        if keep_open != wave_row.keep_open:
            update_wave_under_lease(held, keep_open=keep_open)

    outcome = run_wave(
        app,
        wave_id,
        run_flow=run_flow,
        registrants=request.registrants,
        keep_open=keep_open,
        draw_without_pending=request.draw_without_pending,
        stages=request.stages,
        pacing=request.pacing,
        on_lost=on_lost,
        sign_off=sign_off,
        first=started,
        closed_ends_run=under_lease is None,
    )
    return RunOutcome(
        outcome.end, wave_id, outcome.message, outcome.summary, created, outcome.quota
    )


def export_problem(registrants: str | None) -> str | None:
    """What is wrong with the export named to start a wave (its file, its header), before
    any database is opened; None when nothing is."""
    if registrants is None:
        return None
    if not Path(registrants).is_file():
        return f"--registrants: no such file: {registrants}"
    try:
        check_header(registrants)
    except (MissingColumnsError, HeaderError) as exc:
        return f"--registrants {registrants}: {exc}"
    return None


def _create_or_resume(app: App, request: WaveRun) -> tuple[Wave, bool, set[str]]:
    wave_id, registrants = request.wave_id, request.registrants
    problem = export_problem(registrants)
    if problem is not None:
        raise _Refused(problem)
    existing = _wave_row(app, wave_id)
    values = {k: v for k, v in request.settings.items() if v is not None}
    if existing is None:
        if registrants is None:
            raise _Refused(f"--registrants: wave {wave_id} does not exist yet: name its export")
        if "quota" not in values:
            raise _Refused(f"--quota: wave {wave_id} does not exist yet: give its quota")
    given = set(values)
    base = {name: getattr(existing, name) for name in WaveSettings.model_fields} if existing else {}
    if existing is not None and base.get("sign_off") is None:
        base["sign_off"] = 0  # a wave from before the setting
    merged = {
        "wave_id": wave_id,
        "lottery_seed": secrets.token_hex(16),
        "reference_date": jakarta_today(),
        **base,
        **values,
    }
    try:
        settings = WaveSettings(**merged)
        wave_row, created = create_or_resume_wave(
            app.sessions,
            settings,
            source_path=str(Path(registrants).resolve()) if registrants else None,
            source_sha256=file_sha256(registrants) if registrants else None,
            given=given,
            # A resumed wave's keep_open changes only under the lease: a run refused as
            # busy changes nothing.
            keep_open=existing.keep_open if existing is not None else bool(request.keep_open),
            actor=audit.Actor.here(request.by),  # wave.created, with the wave
        )
    except SettingsError as exc:
        raise _Refused(str(exc)) from None
    return wave_row, created, given


def _audit_run(
    app: App,
    request: WaveRun,
    wave_row: Wave,
    created: bool,
    given: set[str],
    keep_open: bool,
) -> None:
    """The run's audit row (the wave's creation was audited with the wave)."""
    actor = audit.Actor.here(request.by)
    w = wave_row.wave_id
    run: dict[str, Any] = {"via": request.via, "keep_open": keep_open}
    if request.registrants:
        run["export"] = Path(request.registrants).name
    if not created and given:
        run["settings_given"] = sorted(given)
    audit.record(app.sessions, actor, "wave.run", wave_id=w, after=run)


# ---------------------------------------------------------------- run under the lease
@contextmanager
def wave_lease(
    app: App,
    wave_id: int,
    *,
    wait_s: float | None = None,
    on_lost: Callable[[HeldLease], None] | None = None,
    logger: Any = None,
) -> Iterator[HeldLease]:
    """The wave's lease (services/lease.py): `wait_s` None refuses a live holder on this
    host at once (the CLI); a number waits for any holder that long (the deployments). A
    wave that does not exist is refused at once (LookupError), not waited for."""
    if _wave_row(app, wave_id) is None:
        raise LookupError(f"wave {wave_id} does not exist")
    with hold_wave_lease(
        app.sessions, wave_id, wait_s=wait_s, on_lost=on_lost, logger=logger
    ) as held:
        yield held


def run_wave(
    app: App,
    wave_id: int,
    *,
    run_flow: RunFlow,
    registrants: str | None = None,
    keep_open: bool | None = None,
    draw_without_pending: bool = False,
    stages: list[Stage] | None = None,
    pacing: Pacing | None = None,
    execution: Execution | None = None,
    wait_s: float | None = None,
    on_lost: Callable[[HeldLease], None] | None = None,
    sign_off: SignOffWait | None = None,
    first: Callable[[HeldLease], None] | None = None,
    closed_ends_run: bool = False,
    reraise: bool = False,
    logger: Any = None,
) -> RunOutcome:
    """Runs the wave's stages still to do under its lease; then, if `sign_off` says the
    wave was approved meanwhile, runs them again (outside the lease while it waits).
    `first(held)` runs once the lease is first held (creation's audit, a quota raise);
    `closed_ends_run`: a wave found closed under the lease (the run that held it closed
    it meanwhile) ends this one (the CLI's `wave run`); `reraise`: a failure, a busy wave
    or a refusal raises as it came (a deployment's run fails with it) instead of ending
    in an outcome."""
    if _wave_row(app, wave_id) is None:
        # Refused at once, not waited for.
        if reraise:
            raise LookupError(f"wave {wave_id} does not exist")
        return _refused(wave_id, f"wave {wave_id} does not exist")
    summary: WaveSummary | None = None
    for attempt in (1, 2):
        try:
            with wave_lease(app, wave_id, wait_s=wait_s, on_lost=on_lost, logger=logger) as held:
                row = _wave_row(app, wave_id)
                if closed_ends_run and row is not None and row.status == WaveStatus.CLOSED:
                    # The run that held the lease closed it meanwhile.
                    return RunOutcome(RunEnd.CLOSED, wave_id, closed_message(wave_id), summary)
                if attempt == 1 and first is not None:
                    try:
                        first(held)
                    except (LookupError, QuotaError) as exc:
                        if reraise:
                            raise
                        raise _Refused(str(exc)) from None
                if app.execution.partner_limits == "prefect" and attempt == 1:
                    # Prefect's global rate limits are strict: each partner's must exist.
                    ensure_partner_limits(app.partners_config)
                summary = run_flow(
                    wave_id,
                    # The export only once: a run again after sign-off has nothing to load.
                    registrants_path=str(Path(registrants).resolve())
                    if registrants and attempt == 1
                    else None,
                    stages=list(stages) if stages else None,
                    draw_without_pending=draw_without_pending,
                    keep_open=bool(row.keep_open if keep_open is None and row else keep_open),
                    execution=execution or app.execution,
                    pacing=pacing,
                )
        except WaveBusyError as exc:
            if reraise:
                raise
            return RunOutcome(RunEnd.BUSY, wave_id, str(exc), summary)
        except _Refused as exc:
            return _refused(wave_id, str(exc))
        except Exception as exc:  # noqa: BLE001 - the flow failed: its run says why
            if reraise:
                raise
            return RunOutcome(
                RunEnd.FAILED, wave_id, f"wave {wave_id} failed: {error_text(exc)}", summary
            )
        if attempt == 1 and sign_off is not None and sign_off(wave_id, summary):
            continue  # approved meanwhile: credit now
        break
    assert summary is not None
    return RunOutcome(_end_of(summary), wave_id, "", summary)


def _end_of(summary: WaveSummary) -> RunEnd:
    if not summary.pending and summary.waits_for_sign_off:
        return RunEnd.SIGN_OFF
    if summary.pending or summary.close.work_left:
        return RunEnd.PENDING
    return RunEnd.DONE


# ---------------------------------------------------------------- raise the quota
def raise_quota(
    app: App,
    wave_id: int,
    quota: int,
    *,
    run_flow: RunFlow,
    by: str | None = None,
    via: str = "cli",
    wait_s: float | None = None,
    on_lost: Callable[[HeldLease], None] | None = None,
    on_raised: Callable[[int, int], None] | None = None,
    on_started: Callable[[Wave, bool], None] | None = None,
    sign_off: SignOffWait | None = None,
    raise_now: Callable[..., dict] = raise_quota_now,
    logger: Any = None,
) -> RunOutcome:
    """Raises an open wave's quota under its lease (a busy wave, or a closed one, is left
    as it was), then runs the wave: the new seats are drawn and processed. `raise_now`
    (tasks/draw.py raise_quota's signature) is how: a deployment's run makes it a task."""
    row = _wave_row(app, wave_id)
    if row is None:
        return _refused(wave_id, f"wave {wave_id} does not exist")
    if row.status == WaveStatus.CLOSED:
        return _refused(wave_id, f"wave {wave_id} is closed: its quota cannot be raised")
    raised: list[tuple[int, int]] = []

    def raise_it(held: HeldLease) -> None:
        result = raise_now(
            app.sessions,
            wave_id,
            quota,
            lease_owner=held.lease.owner,
            actor=audit.Actor.here(by),
        )
        raised.append((result["old_quota"], result["new_quota"]))
        if on_raised is not None:
            on_raised(*raised[0])

    if via == "cli":
        outcome = start_wave_run(
            app,
            WaveRun(wave_id, keep_open=row.keep_open, by=by, via=via),
            run_flow=run_flow,
            on_started=on_started,
            on_lost=on_lost,
            sign_off=sign_off,
            under_lease=raise_it,
        )
    else:
        outcome = run_wave(
            app,
            wave_id,
            run_flow=run_flow,
            wait_s=wait_s,
            on_lost=on_lost,
            sign_off=sign_off,
            first=raise_it,
            closed_ends_run=False,
            reraise=True,
            logger=logger,
        )
    return RunOutcome(
        outcome.end,
        wave_id,
        outcome.message,
        outcome.summary,
        outcome.created,
        raised[0] if raised else None,
    )
