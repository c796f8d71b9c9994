"""Intake, from the bytes of an export to registrant rows in the database, under arbitrary
input: every data row becomes exactly one record (accepted, or rejected with a reason) on
the line where it starts, nothing crashes, and the database holds exactly one registrant
row per data row.

A model builds each file row by row (so it knows where each row starts and what it should
become); the reader and import_export, over a real database, must agree with it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from models.enums import ReasonCode
from models.tables import Registrant
from rules.intake import (
    MAX_RAW_BYTES,
    MAX_RECORD_BYTES,
    REQUIRED_COLUMNS,
    check_row,
    final_intake_reason,
    find_duplicates,
    read_export,
)
from tasks.intake import import_export
from tests.tasks.factories import make_wave, person

BOM = b"\xef\xbb\xbf"
MALFORMED = ReasonCode.MALFORMED_ROW
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    # One database for all examples: each example gets a wave of its own.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_wave_ids = itertools.count(1)


# ------------------------------------------------------------------ the model of a file
@dataclass
class ModelRow:
    data: bytes  # the row as written, without its line end
    fields: list[str] | None  # the values the reader must find (None: it cannot parse it)
    reason: ReasonCode | None  # checks 1-4, None when accepted
    values: dict[str, str] | None = None  # column -> value, for well-formed rows


@dataclass
class ModelFile:
    data: bytes
    header: list[str]
    rows: list[tuple[int, ModelRow]]  # (line it starts on, row)


_special = st.sampled_from(
    [",", '"', '""', "\n", "\r\n", "\r", " ", "\ufeff", "é", "Nguyễn", "\u2028", "\x00", "\t", ";"]
)
_text = st.lists(
    st.one_of(_special, st.text(st.characters(blacklist_categories=["Cs"]), max_size=8)),
    max_size=4,
).map("".join)
# A very long value (kilobytes; a row stays under the reader's 64 KiB cap).
_long_text = st.builds(
    lambda c, n, tail: c * n + tail,
    st.sampled_from(["a", "é", "9", " ", "\n"]),
    st.integers(1000, 20_000),
    _text,
)


def _quote(value: str, force: bool) -> str:
    if force or any(char in value for char in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _expected_reason(header: list[str], fields: list[str]) -> ReasonCode | None:
    if len(fields) != len(header):
        return MALFORMED
    return check_row(dict(zip(header, fields, strict=True)))[0]


@st.composite
def _well_formed_row(draw, header: list[str]) -> ModelRow:
    """A row that is valid CSV: a person (possibly with some values replaced) or arbitrary
    values, of the right width or not, each value quoted where it must be (or at random)."""
    width = len(header)
    if draw(st.booleans()):
        values = person(
            draw(st.integers(1, 60)), email_verified=draw(st.sampled_from(["true", "false"]))
        )
        values.update(
            {
                column: draw(_text)
                for column in draw(st.lists(st.sampled_from(REQUIRED_COLUMNS), max_size=2))
            }
        )
        fields = [values.get(name, draw(_text)) for name in header]
    else:
        count = draw(st.one_of(st.just(width), st.integers(1, width + 2)))
        fields = [draw(_text) for _ in range(count)]
    if draw(st.integers(0, 3)) == 0:
        fields[draw(st.integers(0, len(fields) - 1))] = draw(_long_text)
    force = draw(st.lists(st.booleans(), min_size=len(fields), max_size=len(fields)))
    text = ",".join(_quote(value, quoted) for value, quoted in zip(fields, force, strict=True))
    if text == "":
        text = '""'  # one empty value: written quoted, or it would be an empty line
    data = text.encode("utf-8")
    # Within the reader's caps on a record (64 KiB, 200 physical lines).
    assume(len(data) < MAX_RECORD_BYTES - 1000 and data.count(b"\n") < 150)
    reason = _expected_reason(header, fields)
    if any("\x00" in value for value in fields):
        # A NUL is no text: the whole row is malformed, shown with replacement characters.
        reason = MALFORMED
        fields = [value.replace("\x00", "\ufffd") for value in fields]
    values = dict(zip(header, fields, strict=True)) if len(fields) == width else None
    return ModelRow(data, fields, reason, values)


@st.composite
def _broken_row(draw, header: list[str]) -> ModelRow:
    """One physical line the reader cannot parse: a stray quote inside an unquoted value,
    invalid UTF-8, or a line longer than the reader's cap."""
    kind = draw(st.sampled_from(["stray-quote", "invalid-utf8", "too-long"]))
    plain = st.text(
        st.characters(blacklist_characters='",\r\n', blacklist_categories=["Cs"]), max_size=6
    )
    if kind == "stray-quote":
        values = [draw(plain) for _ in range(len(header))]
        values[draw(st.integers(0, len(values) - 1))] = draw(plain) + "x" + '"' + draw(plain)
        data = ",".join(values).encode("utf-8")
    elif kind == "invalid-utf8":
        values = [draw(plain).encode("utf-8") for _ in range(len(header))]
        bad = draw(st.sampled_from([b"\xff", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80", b"\x80abc"]))
        values[draw(st.integers(0, len(values) - 1))] += bad
        data = b",".join(values)
    else:
        data = b"x," * (MAX_RECORD_BYTES // 2 + draw(st.integers(1, 100)))
    return ModelRow(data, None, MALFORMED)


@st.composite
def model_files(draw) -> ModelFile:
    header = list(draw(st.permutations(REQUIRED_COLUMNS)))
    for extra in draw(
        st.lists(st.sampled_from(["note", "x y", "source"]), max_size=2, unique=True)
    ):
        header.insert(draw(st.integers(0, len(header))), extra)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    bom = BOM if draw(st.booleans()) else b""
    mixed_ends = draw(st.booleans())
    data = bom + ",".join(header).encode() + newline.encode()
    line = 2
    rows: list[tuple[int, ModelRow]] = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.booleans()):
            data += newline.encode()  # an empty line: no data row
            line += 1
        row = draw(
            st.one_of(_well_formed_row(header), _well_formed_row(header), _broken_row(header))
        )
        end = draw(st.sampled_from(["\n", "\r\n"])) if mixed_ends else newline
        rows.append((line, row))
        data += row.data + end.encode()
        line += (row.data + end.encode()).count(b"\n")
    if rows and draw(st.booleans()):
        data = data[: -len(end)]  # no line break after the last row
    return ModelFile(data, header, rows)


# ------------------------------------------------------------------ the properties
def _db_rows(sessions, wave_id: int) -> dict[int, Registrant]:
    with sessions() as session:
        found = session.execute(select(Registrant).where(Registrant.wave_id == wave_id)).scalars()
        rows = {}
        for r in found:
            assert r.line not in rows, f"two registrant rows for line {r.line}"
            rows[r.line] = r
            session.expunge(r)
        return rows


def _import(sessions, tmp_path, data: bytes) -> tuple[int, dict[int, Registrant]]:
    wave_id = next(_wave_ids)
    make_wave(sessions, wave_id=wave_id)
    path = tmp_path / f"wave-{wave_id}.csv"
    path.write_bytes(data)
    result = import_export(sessions, wave_id, path)
    rows = _db_rows(sessions, wave_id)
    assert result.rows == result.inserted == len(rows)
    return wave_id, rows


@SETTINGS
@given(model_files())
def test_every_row_of_a_file_becomes_one_record_and_one_registrant_row(sessions, tmp_path, model):
    import io

    _header, records = read_export(io.BytesIO(model.data))
    records = list(records)
    assert [r.line for r in records] == [line for line, _row in model.rows]
    for record, (line, row) in zip(records, model.rows, strict=True):
        assert record.reason == row.reason, (line, row.data[:200])
        assert (record.row is None) == (record.reason is not None)
        assert record.raw is None or len(record.raw.encode("utf-8")) <= MAX_RAW_BYTES
        if row.values is not None and record.row is not None:
            assert record.row.full_name == row.values["full_name"]
            assert record.row.payout_account == row.values["payout_account"]

    _wave, stored = _import(sessions, tmp_path, model.data)
    assert sorted(stored) == [line for line, _row in model.rows]

    # DUPLICATE_NIK and EMAIL_UNVERIFIED, from the pure rules, for the accepted rows.
    accepted = [(r.line, r) for r in records if r.row is not None]
    duplicates = find_duplicates((r.row.nik, r.row.registered_at, line) for line, r in accepted)
    for record, (line, row) in zip(records, model.rows, strict=True):
        stored_row = stored[line]
        if record.row is None:
            assert (stored_row.state, stored_row.reason) == ("REJECTED", row.reason.value)
            if row.fields is not None:
                index = model.header.index("registration_id")
                given_id = row.fields[index][:200] if index < len(row.fields) else ""
                assert stored_row.registration_id == (given_id or None)
            continue
        final = final_intake_reason(None, line in duplicates, record.row.email_verified)
        if final is None:
            assert (stored_row.state, stored_row.reason) == ("AWAIT_LOCAL", None)
        else:
            assert (stored_row.state, stored_row.reason) == ("REJECTED", final.value)
        assert stored_row.registration_id == record.row.registration_id
        assert stored_row.registered_at == record.row.registered_at.astimezone(UTC).replace(
            tzinfo=None
        )


_junk = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"\n", b"\r\n", b"\r", b",", b'"', b'""', b"\xef\xbb\xbf", b"\xff\xfe"]),
        st.builds(lambda n: b"y" * n, st.integers(0, 70_000)),
    ),
    max_size=30,
).map(b"".join)


@SETTINGS
@given(_junk, st.booleans())
def test_arbitrary_bytes_never_crash_intake_and_each_record_is_one_registrant_row(
    sessions, tmp_path, body, bom
):
    import io

    header = (BOM if bom else b"") + ",".join(REQUIRED_COLUMNS).encode() + b"\n"
    data = header + body
    records = list(read_export(io.BytesIO(data))[1])
    lines = [r.line for r in records]
    assert lines == sorted(set(lines))
    physical = body.split(b"\n")
    if body.endswith(b"\n"):
        physical.pop()  # the text after the last line break is no line
    non_empty = {n for n, piece in enumerate(physical, start=2) if piece not in (b"", b"\r")}
    assert set(lines) <= non_empty, "a record starts on a non-empty line"
    if non_empty:
        assert lines and lines[0] == min(non_empty), "nothing before the first record is lost"
    if b'"' not in body:
        # No quoting: each non-empty physical line is exactly one data row.
        assert set(lines) == non_empty
    for r in records:
        assert (r.reason is None) == (r.row is not None)
        assert r.raw is None or len(r.raw.encode("utf-8")) <= MAX_RAW_BYTES

    _wave, stored = _import(sessions, tmp_path, data)
    assert sorted(stored) == lines
    for r in records:
        assert stored[r.line].state in ("REJECTED", "AWAIT_LOCAL")
        if r.reason is not None:
            assert stored[r.line].reason == r.reason.value
            raw = stored[r.line].raw
            assert raw is not None and len(raw.encode()) <= MAX_RAW_BYTES
