"""Reading the registrant export (registrant-file.md): a streaming RFC 4180 reader and the
intake checks, from MALFORMED_ROW to EMAIL_UNVERIFIED, in the order they apply.
"""

import io
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import itemgetter
from typing import BinaryIO

from rules.enums import ReasonCode
from rules.nik import PROVINCE_CODES, birth_and_sex, birth_matches

REQUIRED_COLUMNS: tuple[str, ...] = (
    "registration_id",
    "nik",
    "kk_number",
    "full_name",
    "birth_date",
    "gender",
    "email",
    "email_verified",
    "phone",
    "domicile_regency_code",
    "test_score",
    "payout_provider",
    "payout_account",
    "registered_at",
)

# A quoted field that never closes would otherwise swallow the rest of the file.
MAX_RECORD_BYTES = 64 * 1024
MAX_RECORD_LINES = 200
MAX_RAW_BYTES = 4096
_MAX_ID_CHARS = 200
_MAX_NIK_CHARS = 64
_MAX_PHONE_CHARS = 32

_BOM = b"\xef\xbb\xbf"
_ReadLine = Callable[[int], bytes]
_EMPTY_LINES = frozenset({b"\n", b"\r\n", b"\r"})
_DONE, _OPEN, _BAD = 0, 1, 2

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# fromisoformat alone takes any character between date and time; ISO 8601 / RFC 3339 take these.
_DATETIME_START = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d", re.ASCII)
_PHONE = re.compile(r"\+62\d{8,13}", re.ASCII)


class HeaderError(ValueError):
    """The header row cannot be used, so the whole file is refused before any row is read."""


class MissingColumnsError(HeaderError):
    """The header lacks required columns; `columns` names them in the spec's order."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = list(columns)
        super().__init__("missing required column(s): " + ", ".join(self.columns))


class EmptyExportError(MissingColumnsError):
    """The file has nothing but whitespace (an optional BOM, blanks, empty lines): no header
    and no rows. Still a MissingColumnsError (every column), but said as what it is."""

    def __init__(self) -> None:
        super().__init__(list(REQUIRED_COLUMNS))
        self.args = ("the file is empty: no header row, no data rows",)


@dataclass(slots=True)
class RegistrantRow:
    """A row that passed intake checks 1-4, with typed values."""

    registration_id: str
    nik: str
    kk_number: str
    full_name: str
    birth_date: date
    gender: str
    email: str
    email_verified: bool
    phone: str
    domicile_regency_code: str
    test_score: int
    payout_provider: str
    payout_account: str
    registered_at: datetime


@dataclass(slots=True)
class IntakeRecord:
    """What one data row became: `row` when it passed checks 1-4, else `reason` and `raw`.

    `line` is the physical line the row starts on (the header is line 1).
    """

    line: int
    registration_id: str | None
    nik: str | None
    reason: ReasonCode | None
    raw: str | None
    row: RegistrantRow | None
    # The phone as given, for a row rejected by checks 2-4 (its columns are where the
    # header says): the dashboard sends that person's sign-in code there.
    phone: str | None = None


def _date(value: str) -> date | None:
    if not _DATE.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _aware_datetime(value: str) -> datetime | None:
    if not _DATETIME_START.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


_MISSING: tuple[ReasonCode, None] = (ReasonCode.MISSING_FIELD, None)


def _check(
    registration_id: str,
    nik: str,
    kk_number: str,
    full_name: str,
    birth_date: str,
    gender: str,
    email: str,
    email_verified: str,
    phone: str,
    domicile_regency_code: str,
    test_score: str,
    payout_provider: str,
    payout_account: str,
    registered_at: str,
) -> tuple[ReasonCode | None, RegistrantRow | None]:
    # One flat expression: this runs for every row of a multi-million-row file. Text that
    # is only spaces counts as empty; ASCII is checked because str.isdigit takes any script.
    if not (
        0 < len(registration_id) <= 64
        and not registration_id.isspace()
        and len(nik) == 16
        and nik.isdigit()
        and nik.isascii()
        and len(kk_number) == 16
        and kk_number.isdigit()
        and kk_number.isascii()
        and 0 < len(full_name) <= 200
        and not full_name.isspace()
        and (gender == "M" or gender == "F")
        and email
        and not email.isspace()
        and (email_verified == "true" or email_verified == "false")
        and _PHONE.fullmatch(phone)
        and len(domicile_regency_code) == 4
        and domicile_regency_code.isdigit()
        and domicile_regency_code.isascii()
        and domicile_regency_code[:2] in PROVINCE_CODES
        and 0 < len(test_score) <= 3
        and test_score.isdigit()
        and test_score.isascii()
        and payout_provider
        and not payout_provider.isspace()
        and 0 < len(payout_account) <= 64
        and not payout_account.isspace()
    ):
        return _MISSING
    score = int(test_score)
    born = _date(birth_date)
    registered = _aware_datetime(registered_at)
    if score > 100 or born is None or registered is None:
        return _MISSING
    facts = birth_and_sex(nik)
    if facts is None:
        return ReasonCode.INVALID_NIK, None
    if not birth_matches(facts, born, gender):
        return ReasonCode.NIK_DATA_MISMATCH, None
    return None, RegistrantRow(
        registration_id,
        nik,
        kk_number,
        full_name,
        born,
        gender,
        email,
        email_verified == "true",
        phone,
        domicile_regency_code,
        score,
        payout_provider,
        payout_account,
        registered,
    )


def check_row(fields: Mapping[str, str]) -> tuple[ReasonCode | None, RegistrantRow | None]:
    """Intake checks 2-4 on one row (column -> value): MISSING_FIELD, INVALID_NIK, then
    NIK_DATA_MISMATCH; `(None, row)` when it passes.

    Values are judged exactly as given: surrounding spaces are not stripped (RFC 4180 keeps
    them as data), so ` M` is not a gender and a text value of spaces only counts as empty.
    `registered_at` must be ISO 8601 with an offset (`Z` allowed), `T` or a space between
    date and time. An absent column counts as an empty value.
    """
    return _check(*(fields.get(column) or "" for column in REQUIRED_COLUMNS))


def _decode(data: bytes) -> tuple[str, bool]:
    if b"\x00" in data:
        # A NUL is no text (PostgreSQL cannot even store it): the row is malformed.
        return data.decode("utf-8", "replace").replace("\x00", "\ufffd"), False
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), False


def _split_line_end(text: str) -> tuple[str, str]:
    if text.endswith("\r\n"):
        return text[:-2], "\r\n"
    if text.endswith("\n") or text.endswith("\r"):
        return text[:-1], text[-1]
    return text, ""


def _scan(text: str, pos: int, fields: list[str]) -> tuple[int, int]:
    """Split RFC 4180 fields from `pos` into `fields`: (_DONE, end), (_BAD, where) or
    (_OPEN, start of the quoted field still open at the end of `text`)."""
    end = len(text)
    while True:
        if pos < end and text[pos] == '"':
            search = pos + 1
            while True:
                close = text.find('"', search)
                if close == -1:
                    return _OPEN, pos
                if text.startswith('"', close + 1):
                    search = close + 2
                    continue
                break
            fields.append(text[pos + 1 : close].replace('""', '"'))
            after = close + 1
            if after == end:
                return _DONE, end
            if text[after] != ",":
                return _BAD, after
            pos = after + 1
        else:
            comma = text.find(",", pos)
            stop = end if comma == -1 else comma
            value = text[pos:stop]
            if '"' in value:
                return _BAD, pos
            fields.append(value)
            if comma == -1:
                return _DONE, end
            pos = comma + 1


def _cap_raw(text: str) -> str:
    # 4 bytes per character at most, so short text needs no encoding to be measured.
    if len(text) * 4 <= MAX_RAW_BYTES:
        return text
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_RAW_BYTES:
        return text
    return encoded[:MAX_RAW_BYTES].decode("utf-8", "ignore")


def _read_line(readline: _ReadLine) -> bytes:
    """One physical line; one longer than MAX_RECORD_BYTES is cut there (its rest is skipped),
    so the caller can tell it by its length and memory stays bounded."""
    data = readline(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES and not data.endswith(b"\n"):
        rest = readline(MAX_RECORD_BYTES)
        while rest and not rest.endswith(b"\n"):
            rest = readline(MAX_RECORD_BYTES)
    return data


@dataclass(slots=True)
class _Layout:
    width: int
    values: Callable[[list[str]], tuple[str, ...]]
    id_index: int
    nik_index: int
    phone_index: int

    def rejected(
        self, line: int, fields: list[str], raw: str, reason: ReasonCode | None
    ) -> IntakeRecord:
        count = len(fields)
        registration_id = fields[self.id_index][:_MAX_ID_CHARS] if self.id_index < count else ""
        nik = fields[self.nik_index][:_MAX_NIK_CHARS] if self.nik_index < count else ""
        phone = None
        if count == self.width and reason is not ReasonCode.MALFORMED_ROW:
            given = fields[self.phone_index]
            phone = given if 0 < len(given) <= _MAX_PHONE_CHARS and not given.isspace() else None
        return IntakeRecord(
            line, registration_id or None, nik or None, reason, _cap_raw(raw), None, phone
        )


def _records(readline: _ReadLine, first_line: int, layout: _Layout) -> Iterator[IntakeRecord]:
    # Lines put back to be read again (after an unclosed quote), with their line numbers.
    pushed: deque[tuple[int, bytes]] = deque()
    next_line = first_line
    malformed = ReasonCode.MALFORMED_ROW
    width = layout.width
    values = layout.values
    rejected = layout.rejected
    check = _check
    while True:
        if pushed:
            line, data = pushed.popleft()
        else:
            data = _read_line(readline)
            if not data:
                return
            line = next_line
            next_line += 1
        if len(data) <= 2 and data in _EMPTY_LINES:
            continue
        if b'"' not in data and len(data) <= MAX_RECORD_BYTES:
            # The fast path, inlined for speed: unquoted, so one physical line is one record.
            if data[-1:] == b"\n":
                data = data[:-2] if data[-2:-1] == b"\r" else data[:-1]
            elif data[-1:] == b"\r":
                data = data[:-1]
            content, valid = _decode(data)
            if not valid:
                yield rejected(line, content.split(","), content, malformed)
                continue
            fields = content.split(",")
            if len(fields) != width:
                yield rejected(line, fields, content, malformed)
                continue
            reason, row = check(*values(fields))
            if row is None:
                yield rejected(line, fields, content, reason)
            else:
                yield IntakeRecord(line, row.registration_id, row.nik, None, None, row)
            continue
        if len(data) > MAX_RECORD_BYTES:
            yield rejected(line, [], _decode(data)[0], malformed)
            continue

        text, valid = _decode(data)
        content, line_end = _split_line_end(text)
        fields = []
        status, pos = _scan(content, 0, fields)
        taken = [(line, data)]
        size = len(data)
        while status == _OPEN and len(taken) < MAX_RECORD_LINES and size <= MAX_RECORD_BYTES:
            if pushed:
                more = pushed.popleft()
            else:
                more_data = _read_line(readline)
                if not more_data:
                    break
                more = (next_line, more_data)
                next_line += 1
            taken.append(more)
            size += len(more[1])
            more_text, more_valid = _decode(more[1])
            valid = valid and more_valid
            more_content, more_end = _split_line_end(more_text)
            content = content + line_end + more_content
            line_end = more_end
            status, pos = _scan(content, pos, fields)

        if status == _DONE:
            if valid and len(fields) == width:
                reason, row = check(*values(fields))
                if row is None:
                    yield rejected(line, fields, content, reason)
                else:
                    yield IntakeRecord(line, row.registration_id, row.nik, None, None, row)
            else:
                yield rejected(line, fields, content, malformed)
            continue
        # Unclosed or badly quoted: only the first physical line is the bad row; the lines
        # after it are read again as rows of their own, so one stray quote costs one row.
        pushed.extendleft(reversed(taken[1:]))
        first, _ = _split_line_end(text)
        first_fields: list[str] = []
        _scan(first, 0, first_fields)
        yield rejected(line, first_fields, first, malformed)


def _read_header(readline: _ReadLine) -> tuple[list[str], int]:
    """The header's column names and the number of physical lines it took."""
    data = _read_line(readline)
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data.strip():
        # A blank first line: an empty file, or a header further down (refused too).
        more = data
        while more and not more.strip():
            more = _read_line(readline)
        if not more:
            raise EmptyExportError()
    if data in _EMPTY_LINES or not data:
        raise MissingColumnsError(list(REQUIRED_COLUMNS))
    if len(data) > MAX_RECORD_BYTES:
        raise HeaderError(f"header line is longer than {MAX_RECORD_BYTES} bytes")
    content, line_end = _split_line_end(_decode(data)[0])
    names: list[str] = []
    status, pos = _scan(content, 0, names)
    lines = 1
    while status == _OPEN and lines < MAX_RECORD_LINES:
        more = _read_line(readline)
        if not more:
            break
        lines += 1
        more_content, more_end = _split_line_end(_decode(more)[0])
        content = content + line_end + more_content
        line_end = more_end
        status, pos = _scan(content, pos, names)
    if status != _DONE:
        raise HeaderError("header row has bad quoting")
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            raise HeaderError(f"duplicate column in header: {name}")
        seen.add(name)
    missing = [column for column in REQUIRED_COLUMNS if column not in seen]
    if missing:
        raise MissingColumnsError(missing)
    return names, lines


def read_export(stream: BinaryIO) -> tuple[list[str], Iterator[IntakeRecord]]:
    """Read the export's header now and return it with a lazy iterator of one IntakeRecord
    per data row, in file order, carrying checks 1-4 (DUPLICATE_NIK and EMAIL_UNVERIFIED
    need the whole wave: see `find_duplicates` and `final_intake_reason`).

    Raises EmptyExportError (nothing but whitespace: a MissingColumnsError of every
    column), MissingColumnsError (a blank first line lacks every column) or HeaderError
    (bad quoting, a duplicated column name) before any row is read. Extra columns are
    ignored.

    Rows: UTF-8 with an optional BOM, `\\n` or `\\r\\n`, RFC 4180 quoting with embedded line
    breaks. A physical line that is completely empty is not a data row and is skipped
    (outside a quoted field). MALFORMED_ROW: a wrong number of fields, bad quoting, invalid
    UTF-8, or a physical line over 64 KiB. A quoted field still open after 64 KiB or 200
    physical lines, or at the end of the file, makes only its first physical line a
    MALFORMED_ROW, and reading resumes on the next physical line. Memory stays bounded by
    those caps whatever the file's size.
    """
    if isinstance(stream, io.RawIOBase):
        # An unbuffered stream's readline reads byte by byte.
        stream = io.BufferedReader(stream)
    readline = stream.readline
    names, header_lines = _read_header(readline)
    index = {name: position for position, name in enumerate(names) if name}
    layout = _Layout(
        width=len(names),
        values=itemgetter(*(index[column] for column in REQUIRED_COLUMNS)),
        id_index=index["registration_id"],
        nik_index=index["nik"],
        phone_index=index["phone"],
    )
    return names, _records(readline, header_lines + 1, layout)


def duplicate_order_key(registered_at: datetime, line: int) -> tuple[datetime, int]:
    """Orders rows of one NIK: the earlier instant first, then the earlier line."""
    return registered_at.astimezone(UTC), line


def find_duplicates(candidates: Iterable[tuple[str, datetime, int]]) -> set[int]:
    """The lines that are DUPLICATE_NIK among `(nik, registered_at, line)` of rows that passed
    checks 1-4: every row of a NIK except its earliest registration."""
    first: dict[str, tuple[tuple[datetime, int], int]] = {}
    duplicates: set[int] = set()
    for nik, registered_at, line in candidates:
        key = duplicate_order_key(registered_at, line)
        kept = first.get(nik)
        if kept is None:
            first[nik] = (key, line)
        elif key < kept[0]:
            duplicates.add(kept[1])
            first[nik] = (key, line)
        else:
            duplicates.add(line)
    return duplicates


def final_intake_reason(
    check_reason: ReasonCode | None, is_duplicate: bool, email_verified: bool
) -> ReasonCode | None:
    """A row's intake reason: its check 1-4 reason, else DUPLICATE_NIK, else EMAIL_UNVERIFIED."""
    if check_reason is not None:
        return check_reason
    if is_duplicate:
        return ReasonCode.DUPLICATE_NIK
    if not email_verified:
        return ReasonCode.EMAIL_UNVERIFIED
    return None
