from datetime import date

import pytest

from rules.nik import PROVINCE_CODES, NikInfo, nik_matches, parse_nik


def test_province_codes_are_those_of_the_spec():
    expected = {str(n) for n in [*range(11, 20), 21, *range(31, 37), *range(51, 54)]}
    expected |= {str(n) for n in [*range(61, 66), *range(71, 77), 81, 82, *range(91, 97)]}
    assert expected == PROVINCE_CODES


def test_parse_nik_decodes_every_part():
    assert parse_nik("3273054503920042") == NikInfo(
        province="32",
        regency="73",
        district="05",
        day=5,
        month=3,
        yy=92,
        sex="F",
        serial="0042",
    )


@pytest.mark.parametrize(
    ("nik", "day", "month", "yy", "sex"),
    [
        ("3171010101800001", 1, 1, 80, "M"),
        ("3171014101800001", 1, 1, 80, "F"),
        ("3171013112990001", 31, 12, 99, "M"),
        ("3171017112990001", 31, 12, 99, "F"),
        ("3171012902000001", 29, 2, 0, "M"),
        ("3171016902040001", 29, 2, 4, "F"),
    ],
)
def test_parse_nik_reads_birth_day_month_year_and_sex(nik, day, month, yy, sex):
    info = parse_nik(nik)
    assert info is not None
    assert (info.day, info.month, info.yy, info.sex) == (day, month, yy, sex)
    assert (info.province, info.regency, info.district, info.serial) == ("31", "71", "01", "0001")


@pytest.mark.parametrize(
    "nik",
    [
        pytest.param("2071010101800001", id="unknown province 20"),
        pytest.param("9771010101800001", id="unknown province 97"),
        pytest.param("3100010101800001", id="regency 00"),
        pytest.param("3171000101800001", id="district 00"),
        pytest.param("3171010101800000", id="serial 0000"),
        pytest.param("3171010001800001", id="day 00"),
        pytest.param("3171013201800001", id="day 32"),
        pytest.param("3171014001800001", id="day 40"),
        pytest.param("3171017201800001", id="day 72"),
        pytest.param("3171010100800001", id="month 00"),
        pytest.param("3171010113800001", id="month 13"),
        pytest.param("3171013104800001", id="31 April"),
        pytest.param("3171012902010001", id="29 Feb in no leap year"),
        pytest.param("3171013002000001", id="30 Feb"),
    ],
)
def test_parse_nik_rejects_a_broken_structure(nik):
    assert parse_nik(nik) is None


def test_nik_matches_compares_day_month_two_digit_year_and_sex():
    info = parse_nik("3171014101800001")
    assert info is not None
    assert nik_matches(info, date(1980, 1, 1), "F")
    assert nik_matches(info, date(2080, 1, 1), "F")
    assert not nik_matches(info, date(1980, 1, 1), "M")
    assert not nik_matches(info, date(1980, 1, 2), "F")
    assert not nik_matches(info, date(1980, 2, 1), "F")
    assert not nik_matches(info, date(1981, 1, 1), "F")


def test_is_valid_nik_takes_only_16_ascii_digits_of_a_sound_structure():
    from rules.nik import is_valid_nik

    assert is_valid_nik("3171014101900001")
    assert not is_valid_nik("3100000000000000")  # no regency, no district
    assert not is_valid_nik("317101410190000")  # 15 digits
    assert not is_valid_nik("３１７１０１４１０１９００００１")  # full-width digits
    assert not is_valid_nik(None)
