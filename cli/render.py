"""The text (not `--json`) output of `prakerja wave report`, `wave reconcile`, `explain`
and the funnel `wave run` prints: rich tables, amounts as `Rp1.000.000`, and never a
Python dict or list repr.

Pure presentation: each function takes the document its command prints with `--json`
and writes it readably to a `rich` console (standard output by default). Rich writes no
colour codes when standard output is not a terminal; `COLUMNS` fixes the width.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from rules.money import rupiah


def console(file=None) -> Console:
    """A console on the current standard output (click's, under a test runner too).

    No markup, highlighting or emoji: values (error texts, names) are printed as given.
    """
    return Console(
        file=file if file is not None else sys.stdout,
        markup=False,
        highlight=False,
        emoji=False,
    )


def _n(value: Any) -> str:
    """A count with thousands separators; `-` for nothing."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _money(value: Any) -> str:
    return "-" if value is None else rupiah(int(value))


def _value(key: str, value: Any) -> str:
    """One scalar for a table cell: amounts in rupiah, booleans as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and (key == "amount" or key.endswith("_amount")):
        return rupiah(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _flat(value: Any, prefix: str = "") -> list[str]:
    """`key=value` pieces for nested answers (dicts, lists), no reprs."""
    if isinstance(value, dict):
        out: list[str] = []
        for k, v in value.items():
            out += _flat(v, f"{prefix}.{k}" if prefix else str(k))
        if not out and prefix:
            out = [f"{prefix}=-"]
        return out
    if isinstance(value, (list, tuple)):
        inner = ", ".join(" ".join(_flat(v)) for v in value)
        return [f"{prefix}={inner or '-'}" if prefix else inner]
    shown = _value(prefix.rsplit(".", 1)[-1], value)
    return [f"{prefix}={shown}" if prefix else shown]


def _table(title: str | None = None, **kwargs) -> Table:
    """A table whose title is never folded over several lines."""
    return Table(title=title, title_justify="left", min_width=len(title or ""), **kwargs)


def _counts(title: str, what: str, counts: dict[str, int], *, total: bool = False) -> Table:
    table = _table(title)
    table.add_column(what)
    table.add_column("count", justify="right")
    for key, n in counts.items():
        table.add_row(str(key), _n(n))
    if total and len(counts) > 1:
        table.add_row("total", _n(sum(counts.values())), end_section=False)
    return table


# ------------------------------------------------------------------ wave run / report
def funnel(report: dict, out: Console | None = None) -> None:
    """The funnel beside wave 1 of 2020 (with how its selected add up: drawn, then
    backfilled), the credited amount, and what is pending."""
    from rules.funnel import funnel_rows, selected_parts

    out = out or console()
    table = _table(
        f"Wave {report['wave_id']} ({report['status']}, quota {report['quota']:,}): "
        "funnel beside wave 1 of 2020"
    )
    table.add_column("step")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    table.add_column("2020", justify="right")
    table.add_column("2020 share", justify="right")
    split = (report.get("draw") or {}).get("selected")
    for row in funnel_rows(report["funnel"]):
        table.add_row(
            str(row["step"]),
            _n(row["count"]),
            f"{row['share_pct']}%",
            _n(row["reference"]),
            f"{row['reference_share_pct']}%" if row["reference_share_pct"] != "" else "",
        )
        if row["step"] == "selected":
            for label, n in selected_parts(report["funnel"].get("selected", 0), split):
                table.add_row(f"  {label}", _n(n), "", "", "")
    out.print()
    out.print(table)
    out.print(f"Credited amount: {_money(report['credited_amount'])}", soft_wrap=True)
    if report.get("pending"):
        out.print(_counts("Pending by stage", "stage", report["pending"], total=True))


def wave_report(report: dict, out: Console | None = None) -> None:
    """Everything `wave report --json` has, readably."""
    out = out or console()
    funnel(report, out)
    out.print(_counts("Outcomes", "outcome", report["outcomes"], total=True))
    if report.get("reasons"):
        out.print(_counts("Reasons (rejected, not selected)", "reason", report["reasons"]))
    else:
        out.print("Reasons: none")
    if report.get("pending_by_partner"):
        table = _table("Pending by stage and partner")
        table.add_column("stage")
        table.add_column("partner")
        table.add_column("count", justify="right")
        for key, n in report["pending_by_partner"].items():
            stage, _, partner = str(key).partition(":")
            table.add_row(stage, partner or "-", _n(n))
        out.print(table)

    draw = report.get("draw") or {}
    lottery = _table("Lottery", show_header=False)
    lottery.add_column("what")
    lottery.add_column("value", overflow="fold")
    lottery.add_row("seed sha256", report.get("lottery_seed_sha256") or "-")
    if report.get("lottery_seed") is not None:
        lottery.add_row("seed", str(report["lottery_seed"]))
    else:
        lottery.add_row("seed", "shown after the draw")
    lottery.add_row("drawn", _value("", draw.get("drawn")))
    if draw.get("drawn"):
        lottery.add_row("pool size", _n(draw.get("pool_size")))
        lottery.add_row("pool digest", draw.get("pool_digest") or "-")
        lottery.add_row("drawn without pending", _value("", draw.get("without_pending")))
    out.print(lottery)

    money = _table("Money", show_header=False)
    money.add_column("what")
    money.add_column("value", justify="right")
    money.add_row("training balance per participant", _money(report.get("training_balance")))
    money.add_row("credited amount", _money(report["credited_amount"]))
    out.print(money)
    if report.get("ledger"):
        out.print(_counts("Ledger (credits by status)", "status", report["ledger"], total=True))
    else:
        out.print("Ledger: no credits yet")
    if report.get("messages"):
        out.print(_counts("SMS (by status)", "status", report["messages"], total=True))
    else:
        out.print("SMS: none yet")

    sign_off = report.get("sign_off")
    if sign_off:
        table = _table(f"Sign-off: {_n(sign_off.get('required', 0))} approval(s) required")
        table.add_column("approved by")
        table.add_column("at")
        for approval in sign_off.get("approvals") or []:
            table.add_row(str(approval.get("by", "-")), str(approval.get("at", "-")))
        out.print(table)
    out.print(
        f"Dashboard: results published at {report['announced_at']}"
        if report.get("announced_at")
        else "Dashboard: results not announced yet (prakerja wave announce)",
        soft_wrap=True,
    )


# ------------------------------------------------------------------ reconcile
_RECONCILE_LABELS = {
    "ledger_count": "ledger: applied credits",
    "ledger_amount": "ledger: applied amount",
    "statement_count": "issuer statement: entries",
    "statement_amount": "issuer statement: amount",
    "missing_in_statement": "applied but missing in the statement",
    "unknown_in_statement": "in the statement but not in the ledger",
    "amount_mismatches": "amount mismatches",
    "duplicates_in_statement": "duplicates in the statement",
    "credited_count": "registrants credited",
    "expected_amount": "expected amount (credited x balance)",
    "paid_more_than_once_in_program": "paid more than once in the program",
    "statement_error": "statement error",
}


def reconcile(result: dict, out: Console | None = None) -> None:
    """The ledger against the issuer's statement; `-` where the statement was not read."""
    out = out or console()
    table = _table(f"Wave {result.get('wave_id', '?')}: ledger against the card issuer statement")
    table.add_column("check")
    table.add_column("value", justify="right", overflow="fold")
    for key, value in result.items():
        if key in ("wave_id", "ok"):
            continue
        if isinstance(value, dict):
            if not value:
                table.add_row(f"{key.replace('_', ' ')}", "none")
            for status, n in value.items():
                table.add_row(f"{key.replace('_', ' ')}: {status}", _n(n))
            continue
        table.add_row(_RECONCILE_LABELS.get(key, key.replace("_", " ")), _value(key, value))
    out.print(table)
    out.print("Reconciled: OK" if result.get("ok") else "Reconciled: NOT OK", soft_wrap=True)


# ------------------------------------------------------------------ explain
def explain(result: dict, out: Console | None = None) -> None:
    """One registrant's path: the checks, then every other row with the same NIK."""
    out = out or console()
    reason = f" ({result['reason']})" if result.get("reason") else ""
    out.print(
        f"Wave {result['wave_id']}, line {result['line']}: {result['outcome']}{reason}",
        soft_wrap=True,
    )
    who = Table(show_header=False)
    who.add_column("what")
    who.add_column("value")
    who.add_row("NIK", str(result.get("nik") or "-"))
    who.add_row("registration id", str(result.get("registration_id") or "-"))
    who.add_row("card number", str(result.get("card_number") or "-"))
    out.print(who)

    checks = _table("Checks")
    checks.add_column("stage")
    checks.add_column("result")
    checks.add_column("partner")
    checks.add_column("at")
    checks.add_column("details", overflow="fold")
    for check in result.get("checks") or []:
        rest = {
            k: v
            for k, v in check.items()
            if k not in ("stage", "result", "status", "partner", "at")
        }
        outcome = check.get("result", check.get("status"))
        checks.add_row(
            str(check.get("stage", "-")),
            _value("", outcome),
            _value("", check.get("partner")),
            _value("", check.get("at")),
            "  ".join(_flat(rest)) or "-",
        )
    out.print(checks)

    others = result.get("other_lines") or []
    if others:
        table = _table("Other rows with this NIK (duplicates)")
        table.add_column("line", justify="right")
        table.add_column("reason")
        for row in others:
            table.add_row(_n(row.get("line")), _value("", row.get("reason")))
        out.print(table)
    else:
        out.print("Other rows with this NIK: none")


def lifecycle(life: dict, out: Console | None = None) -> None:
    """`explain`'s part after the balance: state, dates, the events used, every payment
    with its key, its re-check and the partner's answer."""
    out = out or console()
    reason = f" ({life['reason']})" if life.get("reason") else ""
    out.print(
        f"After the balance: {life['state']}{reason} since {life['state_on']}; credited "
        f"{life['credited_on']}, deadline {life['deadline_on']}, first purchase "
        f"{life['first_purchase_on'] or '-'}, first completion "
        f"{life['first_completion_on'] or '-'}, balance left {life['balance_left']:,}",
        soft_wrap=True,
    )
    revocation = life["revocation"]
    if revocation["status"]:
        out.print(
            f"Revocation: {revocation['reason']} -> {revocation['status']} on "
            f"{revocation['on'] or '-'}, returned {revocation['amount_returned'] or 0:,}",
            soft_wrap=True,
        )
    events = _table("Training events")
    for col in ("at (UTC)", "platform", "type", "course", "price"):
        events.add_column(col)
    for e in life["events"]:
        events.add_row(e["at"], e["platform"], e["type"], e["course_id"], _n(e["price"]))
    out.print(events)
    payments = _table("Payments")
    for col in ("benefit", "k", "due", "amount", "status", "checked", "key"):
        payments.add_column(col, overflow="fold")
    for p in life["payments"]:
        status = p["status"] + (f" {p['reason']}" if p.get("reason") else "")
        payments.add_row(
            p["benefit"],
            str(p["installment"]),
            p["due_on"],
            f"{p['amount']:,}",
            status,
            p["checked_on"] or "-",
            p["key"],
        )
    out.print(payments)


# ------------------------------------------------------------------ audit
def audit(rows: list[dict], out: Console | None = None) -> None:
    """`prakerja audit`: one entry per operator action, oldest first: who (on which host),
    when, what, then the values before and after (a table would fold them unreadably)."""
    out = out or console()
    if not rows:
        out.print("audit trail: no actions recorded")
        return
    out.print(f"Audit trail: {len(rows):,} actions, oldest first (times UTC)")
    for r in rows:
        wave = f"  wave {r['wave']}" if r["wave"] is not None else ""
        out.print(
            f"#{r['id']}  {r['at']}  {r['action']}{wave}  by {r['who']} on {r['host']}",
            soft_wrap=True,
        )
        for label in ("before", "after"):
            if r[label] is not None:
                out.print(f"    {label}: {' '.join(_flat(r[label]))}", soft_wrap=True)
