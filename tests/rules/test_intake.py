import io
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.enums import ReasonCode
from rules.intake import (
    REQUIRED_COLUMNS,
    EmptyExportError,
    HeaderError,
    IntakeRecord,
    MissingColumnsError,
    check_row,
    duplicate_order_key,
    final_intake_reason,
    find_duplicates,
    read_export,
)

VALID = {
    "registration_id": "REG-1",
    "nik": "3171010101800001",
    "kk_number": "3171010101010001",
    "full_name": "Budi Santoso",
    "birth_date": "1980-01-01",
    "gender": "M",
    "email": "budi@example.id",
    "email_verified": "true",
    "phone": "+6281234567890",
    "domicile_regency_code": "3171",
    "test_score": "75",
    "payout_provider": "bank_a",
    "payout_account": "1234567890",
    "registered_at": "2020-04-11T09:15:02+07:00",
}


def _row(**overrides: str) -> dict[str, str]:
    return {**VALID, **overrides}


def _csv_field(value: str) -> str:
    if any(char in value for char in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _line(row: dict[str, str], columns=REQUIRED_COLUMNS) -> str:
    return ",".join(_csv_field(row[column]) for column in columns)


HEADER = ",".join(REQUIRED_COLUMNS)


def _read(text: str | bytes) -> list[IntakeRecord]:
    data = text.encode() if isinstance(text, str) else text
    _, records = read_export(io.BytesIO(data))
    return list(records)


# check_row: checks 2-4


def test_a_valid_row_passes_with_typed_values():
    reason, row = check_row(VALID)
    assert reason is None
    assert row is not None
    assert row.birth_date == date(1980, 1, 1)
    assert row.email_verified is True
    assert row.test_score == 75
    assert row.registered_at == datetime(2020, 4, 11, 2, 15, 2, tzinfo=UTC)
    assert row.registered_at.utcoffset() == timedelta(hours=7)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("registration_id", ""),
        ("registration_id", "x" * 65),
        ("nik", ""),
        ("nik", "317101010180000"),
        ("nik", "31710101018000011"),
        ("nik", "317101010180000a"),
        ("nik", "٣171010101800001"),
        ("kk_number", "3171-10101010001"),
        ("full_name", ""),
        ("full_name", "   "),
        ("full_name", "x" * 201),
        ("birth_date", "1980-02-30"),
        ("birth_date", "01-01-1980"),
        ("birth_date", "19800101"),
        ("gender", "L"),
        ("gender", "m"),
        ("gender", " M"),
        ("email", ""),
        ("email_verified", "yes"),
        ("email_verified", "True"),
        ("phone", "081234567890"),
        ("phone", "+621234567"),
        ("phone", "+6212345678901234"),
        ("domicile_regency_code", "2071"),
        ("domicile_regency_code", "317"),
        ("test_score", "101"),
        ("test_score", "-1"),
        ("test_score", "75.0"),
        ("test_score", "+75"),
        ("test_score", ""),
        ("payout_provider", ""),
        ("payout_account", ""),
        ("payout_account", "9" * 65),
        ("registered_at", "2020-04-11T09:15:02"),
        ("registered_at", "2020-04-11"),
        ("registered_at", "2020-04-11X09:15:02+07:00"),
        ("registered_at", "yesterday"),
    ],
)
def test_a_missing_or_mistyped_value_is_missing_field(column, value):
    assert check_row(_row(**{column: value})) == (ReasonCode.MISSING_FIELD, None)


def test_an_absent_column_is_missing_field():
    fields = dict(VALID)
    del fields["phone"]
    assert check_row(fields) == (ReasonCode.MISSING_FIELD, None)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("registration_id", "x" * 64),
        ("full_name", "Dr. H. Budi, S.E."),
        ("test_score", "0"),
        ("test_score", "100"),
        ("test_score", "60"),
        ("email_verified", "false"),
        ("phone", "+6212345678"),
        ("phone", "+621234567890123"),
        ("registered_at", "2020-04-11T02:15:02Z"),
        ("registered_at", "2020-04-11 09:15:02.123456+07:00"),
    ],
)
def test_values_at_the_edge_of_their_range_are_accepted(column, value):
    reason, row = check_row(_row(**{column: value}))
    assert reason is None and row is not None


@pytest.mark.parametrize(
    "nik",
    ["2071010101800001", "3100010101800001", "3171000101800001", "3171010101800000"],
)
def test_a_nik_breaking_its_structure_is_invalid_nik(nik):
    assert check_row(_row(nik=nik))[0] == ReasonCode.INVALID_NIK


@pytest.mark.parametrize(
    ("nik", "birth_date", "gender"),
    [
        ("3171010101800001", "1980-01-02", "M"),
        ("3171010101800001", "1981-01-01", "M"),
        ("3171010101800001", "1980-01-01", "F"),
        ("3171014101800001", "1980-01-01", "M"),
    ],
)
def test_a_nik_disagreeing_with_the_row_is_nik_data_mismatch(nik, birth_date, gender):
    assert check_row(_row(nik=nik, birth_date=birth_date, gender=gender))[0] == (
        ReasonCode.NIK_DATA_MISMATCH
    )


def test_a_woman_nik_with_day_plus_forty_matches():
    assert check_row(_row(nik="3171014101800001", gender="F"))[0] is None


def test_a_nik_born_29_february_2000_is_valid():
    reason, _ = check_row(_row(nik="3171012902000001", birth_date="2000-02-29"))
    assert reason is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"phone": "", "nik": "2071010101800001"}, ReasonCode.MISSING_FIELD),
        ({"nik": "2071010101800001", "gender": "F"}, ReasonCode.INVALID_NIK),
        ({"gender": "F", "email_verified": "false"}, ReasonCode.NIK_DATA_MISMATCH),
    ],
)
def test_a_row_failing_several_checks_gets_the_first(overrides, reason):
    assert check_row(_row(**overrides))[0] == reason


# read_export: the file


def test_read_export_reads_rows_with_their_line_numbers():
    second = _row(registration_id="REG-2", nik="3171014101800001", gender="F")
    records = _read(f"{HEADER}\n{_line(VALID)}\n{_line(second)}\n")
    assert [(r.line, r.registration_id, r.nik, r.reason) for r in records] == [
        (2, "REG-1", "3171010101800001", None),
        (3, "REG-2", "3171014101800001", None),
    ]
    assert records[0].raw is None
    assert records[0].row is not None and records[0].row.full_name == "Budi Santoso"


def test_read_export_handles_crlf_and_a_bom():
    data = b"\xef\xbb\xbf" + f"{HEADER}\r\n{_line(VALID)}\r\n".encode()
    names, records = read_export(io.BytesIO(data))
    assert names == list(REQUIRED_COLUMNS)
    [record] = list(records)
    assert record.reason is None
    assert record.row is not None and record.row.registered_at.tzinfo is not None


def test_a_file_without_a_final_line_break_keeps_its_last_row():
    records = _read(f"{HEADER}\n{_line(VALID)}")
    assert [(r.line, r.reason) for r in records] == [(2, None)]


def test_columns_in_any_order_and_extra_columns_are_accepted():
    columns = ("note", *reversed(REQUIRED_COLUMNS), "source")
    row = {**VALID, "note": "hello, world", "source": "web"}
    header = ",".join(columns)
    names, records = read_export(io.BytesIO(f"{header}\n{_line(row, columns)}\n".encode()))
    assert names == list(columns)
    [record] = list(records)
    assert record.reason is None and record.row is not None
    assert record.row.registration_id == "REG-1"


def test_quoted_fields_may_hold_commas_quotes_and_line_breaks():
    quoted = _row(full_name='Budi "Jr." Santoso,\nS.E.', registration_id="REG-Q")
    text = f"{HEADER}\n{_line(quoted)}\n{_line(_row(registration_id='REG-2'))}\n"
    records = _read(text)
    assert [(r.line, r.registration_id) for r in records] == [(2, "REG-Q"), (4, "REG-2")]
    assert records[0].row is not None
    assert records[0].row.full_name == 'Budi "Jr." Santoso,\nS.E.'


def test_embedded_crlf_in_a_quoted_field_is_kept_and_lines_still_count():
    quoted = _row(full_name="Budi\r\n\r\nSantoso")
    text = f"{HEADER}\r\n{_line(quoted)}\r\n{_line(VALID)}\r\n"
    records = _read(text)
    assert [r.line for r in records] == [2, 5]
    assert records[0].row is not None and records[0].row.full_name == "Budi\r\n\r\nSantoso"


def test_empty_lines_are_not_rows_and_do_not_shift_line_numbers():
    records = _read(f"{HEADER}\n\n{_line(VALID)}\r\n\r\n\n{_line(VALID)}\n\n")
    assert [r.line for r in records] == [3, 6]


def test_a_header_only_file_has_no_rows():
    assert _read(f"{HEADER}\n") == []


@pytest.mark.parametrize(
    "bad_line",
    [
        pytest.param(_line(VALID) + ",extra", id="too many fields"),
        pytest.param(_line(VALID).rsplit(",", 1)[0], id="too few fields"),
        pytest.param(_line(VALID).replace("Budi Santoso", 'Budi "Jr" Santoso'), id="bare quote"),
        pytest.param(_line(VALID).replace("Budi Santoso", '"Budi"x'), id="text after quote"),
        pytest.param("   ", id="blank but not empty"),
    ],
)
def test_an_unparseable_row_is_malformed_and_the_next_row_is_read(bad_line):
    records = _read(f"{HEADER}\n{bad_line}\n{_line(VALID)}\n")
    assert [(r.line, r.reason) for r in records] == [(2, ReasonCode.MALFORMED_ROW), (3, None)]
    assert records[0].raw == bad_line
    assert records[0].row is None


def test_a_malformed_row_keeps_its_registration_id_and_nik_where_it_had_them():
    [record] = _read(f"{HEADER}\n{_line(VALID)},extra\n")
    assert record.reason == ReasonCode.MALFORMED_ROW
    assert (record.registration_id, record.nik) == ("REG-1", "3171010101800001")


def test_invalid_utf8_is_malformed_and_shown_with_replacement_characters():
    bad = _line(_row(full_name="Budi XX")).encode().replace(b"XX", b"\xff\xfe")
    records = _read(f"{HEADER}\n".encode() + bad + b"\n" + _line(VALID).encode() + b"\n")
    assert [(r.line, r.reason) for r in records] == [(2, ReasonCode.MALFORMED_ROW), (3, None)]
    assert "Budi \ufffd\ufffd" in records[0].raw


def test_a_row_failing_checks_keeps_its_raw_text():
    line = _line(_row(gender="X"))
    [record] = _read(f"{HEADER}\n{line}\n")
    assert (record.reason, record.raw, record.registration_id) == (
        ReasonCode.MISSING_FIELD,
        line,
        "REG-1",
    )


def test_raw_text_is_capped_at_4096_bytes_on_a_character_boundary():
    long_name = "é" * 3000
    [record] = _read(f"{HEADER}\n{_line(_row(full_name=long_name))},extra\n")
    assert record.reason == ReasonCode.MALFORMED_ROW
    assert record.raw is not None
    encoded = record.raw.encode("utf-8")
    assert 4090 < len(encoded) <= 4096
    assert record.raw.startswith("REG-1,3171010101800001")


def test_an_unclosed_quote_costs_only_its_own_line():
    rows = [_line(_row(registration_id=f"REG-{n}")) for n in range(3, 6)]
    text = f'{HEADER}\nREG-2,"never closed\n' + "\n".join(rows) + "\n"
    records = _read(text)
    assert [(r.line, r.registration_id, r.reason) for r in records] == [
        (2, "REG-2", ReasonCode.MALFORMED_ROW),
        (3, "REG-3", None),
        (4, "REG-4", None),
        (5, "REG-5", None),
    ]
    assert records[0].raw == 'REG-2,"never closed'


def test_an_unclosed_quote_is_given_up_after_200_lines():
    filler = "\n".join(f"line {n}" for n in range(250))
    records = _read(f'{HEADER}\nREG-2,"open\n{filler}\n{_line(VALID)}\n')
    assert records[0].line == 2 and records[0].reason == ReasonCode.MALFORMED_ROW
    assert len(records) == 252
    assert records[-1].line == 253 and records[-1].reason is None


def test_a_quoted_field_closing_within_the_cap_spans_its_lines():
    name = "B" + "\n" * 149 + "S"
    records = _read(f"{HEADER}\n{_line(_row(full_name=name))}\n{_line(VALID)}\n")
    assert [(r.line, r.reason) for r in records] == [(2, None), (152, None)]


def test_the_header_error_comes_before_any_row_is_read():
    with pytest.raises(MissingColumnsError) as error:
        read_export(io.BytesIO(b"registration_id,nik\n" + b"garbage\n" * 3))
    assert "phone" in error.value.columns
    assert "nik" not in error.value.columns


def test_a_missing_column_error_names_the_column():
    header = ",".join(column for column in REQUIRED_COLUMNS if column != "phone")
    with pytest.raises(
        MissingColumnsError, match="missing required column\\(s\\): phone$"
    ) as error:
        read_export(io.BytesIO(f"{header}\n".encode()))
    assert error.value.columns == ["phone"]


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n" + HEADER.encode() + b"\n"])
def test_a_file_without_a_header_misses_every_column(data):
    with pytest.raises(MissingColumnsError) as error:
        read_export(io.BytesIO(data))
    assert error.value.columns == list(REQUIRED_COLUMNS)


def test_a_duplicated_column_refuses_the_file_naming_it():
    with pytest.raises(HeaderError, match="nik"):
        read_export(io.BytesIO(f"{HEADER},nik\n".encode()))


def test_rows_are_read_lazily():
    class Unreadable(io.BytesIO):
        reads = 0

        def readline(self, size=-1):
            Unreadable.reads += 1
            return super().readline(size)

    stream = Unreadable(f"{HEADER}\n{_line(VALID)}\n{_line(VALID)}\n".encode())
    _, records = read_export(stream)
    assert Unreadable.reads == 1
    next(records)
    assert Unreadable.reads == 2


# duplicates and the final reason


def test_the_earlier_registration_keeps_the_nik_across_offsets():
    jakarta = timezone(timedelta(hours=7))
    earlier = datetime(2020, 4, 11, 9, 0, tzinfo=jakarta)  # 02:00 UTC
    later = datetime(2020, 4, 11, 2, 30, tzinfo=UTC)
    assert find_duplicates([("n1", later, 2), ("n1", earlier, 3)]) == {2}


def test_on_an_equal_instant_the_earlier_line_keeps_the_nik():
    jakarta = timezone(timedelta(hours=7))
    instant = datetime(2020, 4, 11, 2, 0, tzinfo=UTC)
    same = instant.astimezone(jakarta)
    assert find_duplicates([("n1", same, 9), ("n1", instant, 4), ("n1", instant, 7)]) == {7, 9}


def test_distinct_niks_are_never_duplicates():
    instant = datetime(2020, 4, 11, tzinfo=UTC)
    assert find_duplicates([("n1", instant, 2), ("n2", instant, 3)]) == set()


def test_duplicate_order_key_compares_instants_then_lines():
    jakarta = timezone(timedelta(hours=7))
    instant = datetime(2020, 4, 11, 2, 0, tzinfo=UTC)
    assert duplicate_order_key(instant.astimezone(jakarta), 5) == duplicate_order_key(instant, 5)
    assert duplicate_order_key(instant, 4) < duplicate_order_key(instant, 5)


@pytest.mark.parametrize(
    ("check_reason", "is_duplicate", "email_verified", "reason"),
    [
        (ReasonCode.INVALID_NIK, True, False, ReasonCode.INVALID_NIK),
        (None, True, False, ReasonCode.DUPLICATE_NIK),
        (None, False, False, ReasonCode.EMAIL_UNVERIFIED),
        (None, False, True, None),
    ],
)
def test_final_intake_reason_order(check_reason, is_duplicate, email_verified, reason):
    assert final_intake_reason(check_reason, is_duplicate, email_verified) == reason


# properties


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_after_a_header_never_crash(body):
    records = _read(f"{HEADER}\n".encode() + body)
    lines = [record.line for record in records]
    assert lines == sorted(set(lines))
    assert len(records) <= body.count(b"\n") + 1
    for record in records:
        assert record.raw is None or len(record.raw.encode("utf-8")) <= 4096
        assert (record.reason is None) == (record.row is not None)


_simple_field = st.text(
    alphabet=st.characters(blacklist_characters='",\r\n', blacklist_categories=["Cs"]),
    max_size=12,
)
_simple_row = st.lists(_simple_field, min_size=1, max_size=20).map(",".join)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(_simple_row, st.just("")), max_size=30),
    st.sampled_from(["\n", "\r\n"]),
)
def test_simple_rows_give_one_record_per_non_empty_line(rows, newline):
    records = _read(HEADER + newline + newline.join(rows) + newline)
    expected = [number for number, row in enumerate(rows, start=2) if row]
    assert [record.line for record in records] == expected


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b" \n\r\n", b"\xef\xbb\xbf\t\n"])
def test_a_file_of_nothing_but_whitespace_is_refused_as_empty(data):
    with pytest.raises(EmptyExportError, match="the file is empty") as error:
        read_export(io.BytesIO(data))
    assert error.value.columns == list(REQUIRED_COLUMNS)


def test_a_blank_first_line_before_a_header_is_not_called_empty():
    with pytest.raises(MissingColumnsError) as error:
        read_export(io.BytesIO(b"  \n" + HEADER.encode() + b"\n"))
    assert not isinstance(error.value, EmptyExportError)
