"""Sign-off before money, for a payout run (lifecycle.md, "Payout runs"): what an approver
approves (count and rupiah by benefit, a digest over the (NIK, benefit, installment,
amount) list), approvals recorded with what their approver saw, and the gate before
`disburse`. A change to the list changes the digest and voids the approvals."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from sqlalchemy import insert, select

from models.db import SessionFactory
from models.queries import utcnow
from models.tables import PayoutRun, PayoutSignOff
from readmodels.approval_audit import payout_sign_off_rows
from rules.signature import Approvers
from rules.signoff import (
    Approval,
    approver_problem,
    matches_audit,
    same_person_key,
    valid_approvals,
)
from tasks import audit
from tasks.payout import to_disburse
from tasks.signoff import SignOffError, audit_signature, signing_problem

RUN = PayoutRun.__table__  # type: ignore[attr-defined]
PS = PayoutSignOff.__table__  # type: ignore[attr-defined]


def _counted(session, as_of: date, digest: str, approvers: Approvers | None) -> list[Approval]:
    """The approvals that count for the run's list as it stands (`digest`), as for waves:
    its digest, signed under an approvers file, and standing in the audit trail."""
    audited = payout_sign_off_rows(session, as_of)
    approvals = []
    for row in session.execute(select(PS).where(PS.c.as_of == as_of).order_by(PS.c.id)):
        a = Approval(
            row.approved_by,
            row.at.isoformat() + "Z",
            row.digest,
            row.signature,
            row.key_fingerprint,
        )
        approvals.append(replace(a, audited=matches_audit(a, audited)))
    return valid_approvals(approvals, digest, approvers=approvers, kind="payout", ident=as_of)


def _status(session, as_of: date, approvers: Approvers | None) -> dict[str, Any]:
    seen = to_disburse(session, as_of)
    required = session.execute(select(RUN.c.sign_off).where(RUN.c.as_of == as_of)).scalar() or 0
    approvals = [
        {"by": a.by, "at": a.at, "signed": a.signature is not None, "key": a.fingerprint}
        for a in (_counted(session, as_of, seen["digest"], approvers) if required else [])
    ]
    return {
        **seen,
        "required": int(required),
        "approvals": approvals,
        "signed": approvers is not None,
        # Nothing to pay needs nobody's approval.
        "approved": not required or not seen["payments"] or len(approvals) >= required,
    }


def status(sessions: SessionFactory, as_of: date, *, approvers: Approvers | None) -> dict[str, Any]:
    """The run's payments as they stand, the approvals that count, and whether it may pay
    (the gate before `disburse`)."""
    with sessions() as session:
        return _status(session, as_of, approvers)


def record_approval(
    sessions: SessionFactory,
    as_of: date,
    actor: audit.Actor,
    *,
    via: str,
    seen_digest: str,
    approvers: Approvers | None,
    signature: str | None = None,
) -> dict[str, Any]:
    """Records `actor`'s approval of the run's payments as they stand, and its audit row,
    in one transaction. SignOffError: no such run, it needs none, nothing to approve, the
    approver already approved it, the list changed since `seen_digest` was shown, or the
    signature (under an approvers file) is missing, not the approver's or over another
    digest."""
    problem = approver_problem(actor.who)
    if problem:
        raise SignOffError(problem)
    with sessions() as session, session.begin():
        audit.lock(session)
        run = session.get(PayoutRun, as_of)
        if run is None:
            raise SignOffError(f"no payout run for {as_of.isoformat()}: run it first")
        if not run.sign_off:
            raise SignOffError(f"the payout run of {as_of.isoformat()} needs no sign-off")
        now_status = _status(session, as_of, approvers)
        if not now_status["payments"]:
            raise SignOffError(f"the payout run of {as_of.isoformat()} has nothing to pay")
        if seen_digest != now_status["digest"]:
            raise SignOffError(
                f"the payout run of {as_of.isoformat()} changed since it was shown (digest "
                f"{seen_digest[:12]}... then, {now_status['digest'][:12]}... now)"
            )
        key = same_person_key(actor.who)
        if any(same_person_key(a["by"]) == key for a in now_status["approvals"]):
            raise SignOffError(f"{actor.who} already approved this payout run as it stands")
        refused, fingerprint = signing_problem(
            approvers,
            actor.who,
            signature,
            "payout",
            as_of,
            now_status["digest"],
            now_status["approvals"],
        )
        if refused:
            raise SignOffError(refused)
        signature = signature.strip() if signature and approvers is not None else None
        at = utcnow()
        session.connection().execute(
            insert(PS),
            [
                {
                    "as_of": as_of,
                    "approved_by": actor.who.strip(),
                    "approver_key": key,
                    "host": actor.host,
                    "via": via,
                    "at": at,
                    "payments": now_status["payments"],
                    "total_amount": now_status["total_amount"],
                    "digest": now_status["digest"],
                    "signature": signature,
                    "key_fingerprint": fingerprint,
                }
            ],
        )
        audit.append(
            session,
            actor,
            "payout.sign-off",
            before={"approvals": len(now_status["approvals"])},
            after={
                "as_of": as_of.isoformat(),
                "payments": now_status["payments"],
                "total_amount": now_status["total_amount"],
                "digest": now_status["digest"],
                "via": via,
                "approvals": len(now_status["approvals"]) + 1,
                "required": now_status["required"],
                **audit_signature(signature, fingerprint),
            },
        )
        return _status(session, as_of, approvers)


def markdown(status: dict[str, Any]) -> str:
    lines = [
        f"# Payout run {status['as_of']}: waiting for sign-off",
        "",
        "| benefit | payments | rupiah |",
        "| --- | ---: | ---: |",
    ]
    for benefit, v in status["by_benefit"].items():
        lines.append(f"| {benefit} | {v['count']:,} | {v['amount']:,} |")
    lines += [
        "",
        f"Digest `{status['digest']}`; {len(status['approvals'])} of {status['required']} "
        f"approvals ({'signed' if status.get('signed') else 'unsigned: no approvers file'}). "
        "Approve with `prakerja payout sign-off --as-of "
        f"{status['as_of']} --by NAME --digest {status['digest']}"
        f"{' --key FILE' if status.get('signed') else ''}`, then run it again.",
    ]
    return "\n".join(lines)
