"""Masking of personal data (NIK, KK, phone, name, account, email, birth date) for logs,
artifacts and errors.

The database holds personal data in full; anything that prints it goes through here.
Free text can only be masked for what a pattern finds (numbers, emails, old dates): names
cannot be told from other words, so they must not get into text at all (engines with
`hide_parameters`, and `error_text` for exceptions, which drops a database error's SQL,
parameters and details).
"""

import re
from datetime import date

_PHONE_PREFIX = "+62"
# Birth dates: a date at least this many years back is a person's, not an operation's
# (reference dates, deadlines and timestamps are recent; registrants are 17 or older).
_BIRTH_DATE_YEARS = 15
# One pass over the text so a phone's digits are never re-read as part of a NIK or account.
_PERSONAL_NUMBER = re.compile(
    r"(?P<phone>\+62\d{8,13}(?!\d))"
    r"|(?P<email>(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
    r"|(?P<date>(?<![\w-])(?:(?P<y1>\d{4})[-/]\d{1,2}[-/]\d{1,2}|\d{1,2}[-/]\d{1,2}[-/](?P<y2>\d{4}))(?![\d/-]))"
    r"|(?P<nik>(?<!\d)\d{16}(?!\d))"
    # Account numbers, wallet ids, phones written without +62: 10 digits or more.
    r"|(?P<account>(?<![\w-])\d{10,}(?![\w-]))"
)


def mask_nik(nik: str | None) -> str:
    """`3171********0001` for a 16-character NIK or KK; other text keeps its last 2 chars."""
    if not nik:
        return ""
    if len(nik) == 16:
        return nik[:4] + "********" + nik[-4:]
    return "*" * max(len(nik) - 2, 0) + nik[-2:]


def mask_phone(phone: str | None) -> str:
    """Keep a leading `+62` and the last 4 characters; a number that short is fully masked."""
    if not phone:
        return ""
    prefix = _PHONE_PREFIX if phone.startswith(_PHONE_PREFIX) else ""
    body = phone[len(prefix) :]
    if len(body) <= 4:
        return prefix + "*" * len(body)
    return prefix + "*" * (len(body) - 4) + body[-4:]


def mask_name(name: str | None) -> str:
    """First character and `***`, whatever the name's length."""
    if not name:
        return ""
    return name[0] + "***"


def mask_account(account: str | None) -> str:
    """`****` and the last 4 characters; an account of 4 or fewer characters shows none."""
    if not account:
        return ""
    if len(account) > 4:
        return "****" + account[-4:]
    return "****"


def mask_email(email: str | None) -> str:
    """`b***@gmail.com`: the first character of the mailbox, and the domain."""
    if not email:
        return ""
    local, at, domain = email.partition("@")
    return (local[:1] + "***" + at + domain) if at else mask_name(email)


def _mask_match(match: re.Match[str]) -> str:
    if match.group("phone") is not None:
        return mask_phone(match.group("phone"))
    if match.group("email") is not None:
        return mask_email(match.group("email"))
    if match.group("date") is not None:
        year = int(match.group("y1") or match.group("y2"))
        if year > date.today().year - _BIRTH_DATE_YEARS:
            return match.group("date")  # an operation's date, not a birth date
        return re.sub(r"\d", "*", match.group("date"))
    if match.group("nik") is not None:
        return mask_nik(match.group("nik"))
    return mask_account(match.group("account"))


# Whole rows in database errors: SQLAlchemy's "[parameters: ...]" line (an engine without
# hide_parameters) and PostgreSQL's DETAIL (a key's values) and CONTEXT (a COPY row).
_DATABASE_ROWS = re.compile(r"\[parameters: [^\n]*|(?m:^(?:DETAIL|CONTEXT): [^\n]*)")


def _hide_rows(match: re.Match[str]) -> str:
    text = match.group(0)
    return "[parameters hidden]" if text.startswith("[") else text.split(":", 1)[0] + ": (hidden)"


def mask_text(text: str) -> str:
    """Mask what free text can be searched for: every standalone 16-digit number (NIK, KK),
    `+62` phone, email address, number of 10 digits or more (accounts, local phones) and
    date of more than 15 years ago (birth dates); and drop the rows a database error
    quotes (its parameters, PostgreSQL's DETAIL and CONTEXT lines)."""
    return _PERSONAL_NUMBER.sub(_mask_match, _DATABASE_ROWS.sub(_hide_rows, text))


# A double-quoted part of a database message: kept when it is an identifier (a constraint,
# table or column name), replaced otherwise (PostgreSQL quotes the offending value).
_QUOTED = re.compile(r'"([^"]*)"')
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$.]*")
ERROR_TEXT_LIMIT = 500


def _quoted_identifiers_only(text: str) -> str:
    return _QUOTED.sub(lambda m: m.group(0) if _IDENTIFIER.fullmatch(m.group(1)) else '"…"', text)


def error_text(exc: BaseException) -> str:
    """`Type: message` of an exception, safe to log, store or print.

    A database error keeps only the driver's first line ("database is locked",
    'duplicate key value violates unique constraint "x"'): not the SQL statement, its
    parameters (rows of people), nor PostgreSQL's DETAIL (the duplicate key's value) or
    CONTEXT (the COPY row). Whatever remains goes through `mask_text`.
    """
    if getattr(type(exc), "already_cleaned", False):  # runtime.boundary.CleanedError
        return mask_text(str(exc))
    orig = getattr(exc, "orig", None)  # sqlalchemy.exc.DBAPIError wraps the driver's error
    name = type(exc).__name__
    if orig is not None and type(exc).__module__.startswith("sqlalchemy"):
        text = _quoted_identifiers_only(_first_line(str(orig)))
        if type(orig).__name__ != name:
            text = f"{type(orig).__name__}: {text}"
    elif type(exc).__module__.split(".")[0] in ("sqlalchemy", "psycopg", "psycopg2", "sqlite3"):
        # SQLAlchemy's own errors print the statement; a driver's, its DETAIL and CONTEXT.
        text = _quoted_identifiers_only(_first_line(str(exc)))
    else:
        text = str(exc)
    text = mask_text(text)
    if len(text) > ERROR_TEXT_LIMIT:
        text = text[:ERROR_TEXT_LIMIT] + "…"
    return f"{name}: {text}" if text else name


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def mask_nik_for_owner(nik: str) -> str:
    """`3201**********01`: how the dashboard shows a signed-in person their NIK (portal.md)."""
    return nik[:4] + "*" * 10 + nik[-2:]


def mask_card(card: str | None) -> str:
    """`**** **** **** 1234`: the last four digits of a card number."""
    return "**** **** **** " + (card or "")[-4:]
