import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.masking import mask_account, mask_name, mask_nik, mask_phone, mask_text


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("3171010101800001", "3171********0001"),
        ("12345", "***45"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_nik_shows_only_region_and_serial(value, masked):
    assert mask_nik(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("+6281234567890", "+62*******7890"),
        ("081234567890", "********7890"),
        ("+621234", "+62****"),
        (None, ""),
    ],
)
def test_mask_phone_keeps_country_code_and_last_four_digits(value, masked):
    assert mask_phone(value) == masked


def test_mask_name_keeps_only_the_initial():
    assert mask_name("Budi Santoso") == "B***"
    assert mask_name("") == ""


@pytest.mark.parametrize(
    ("value", "masked"), [("1234567890", "****7890"), ("1234", "****"), (None, "")]
)
def test_mask_account_keeps_last_four(value, masked):
    assert mask_account(value) == masked


def test_mask_text_masks_nik_kk_and_phone_inside_a_message():
    message = "nik=3171010101800001 kk 3171010101010001, sms +6281234567890."
    assert mask_text(message) == ("nik=3171********0001 kk 3171********0001, sms +62*******7890.")


def test_mask_text_leaves_other_numbers_alone():
    message = (
        "wave 1: 164000 seats, Rp 1,000,000 each, run 1b2c3d4e-1234-4567-8901-123456789012, "
        "reference date 2026-11-28, deadline 2026-11-30T06:00:00"
    )
    assert mask_text(message) == message


def test_mask_text_masks_emails_accounts_local_phones_and_birth_dates():
    message = (
        "('REG-000000007', 'budi.santoso.7@gmail.com', '0812345678901', '1234567890', "
        "'1990-05-01', '01/05/1990', account 12345678901234567)"
    )
    assert mask_text(message) == (
        "('REG-000000007', 'b***@gmail.com', '****8901', '****7890', "
        "'****-**-**', '**/**/****', account ****4567)"
    )


def test_error_text_keeps_no_sql_parameters_nor_database_details():
    import sqlite3

    from sqlalchemy.exc import IntegrityError, OperationalError

    from rules.masking import error_text

    row = ("3171010101800001", "Budi Santoso", "budi@gmail.com", "+6281234567890")
    locked = OperationalError("INSERT INTO registrant VALUES (?, ?, ?, ?)", [row], None)
    locked.orig = sqlite3.OperationalError("database is locked")
    assert error_text(locked) == "OperationalError: database is locked"

    class UniqueViolation(Exception):  # psycopg's, as printed: DETAIL names the key
        pass

    duplicate = IntegrityError(
        "INSERT INTO ledger ...",
        [row],
        UniqueViolation(
            'duplicate key value violates unique constraint "ledger_idempotency_key_key"\n'
            "DETAIL:  Key (idempotency_key)=(w1:3171010101800001:training) already exists."
        ),
    )
    assert error_text(duplicate) == (
        "IntegrityError: UniqueViolation: duplicate key value violates unique constraint "
        '"ledger_idempotency_key_key"'
    )
    bad_date = OperationalError(
        "x", None, UniqueViolation('invalid input syntax for type date: "Budi Santoso"')
    )
    assert "Budi" not in error_text(bad_date)
    assert error_text(ValueError("NIK 3171010101800001 refused")) == (
        "ValueError: NIK 3171********0001 refused"
    )


@given(
    before=st.text(alphabet="ab ,:=+-x"),
    nik=st.from_regex(r"\A[0-9]{16}\Z"),
    after=st.text(alphabet="ab ,:=+-x"),
)
def test_masked_text_never_shows_a_sixteen_digit_number(before, nik, after):
    masked = mask_text(before + nik + after)
    assert nik not in masked
    assert not re.search(r"\d{16}", masked)


def test_the_dashboard_masks_for_the_owner():
    from rules.masking import mask_card, mask_nik_for_owner

    assert mask_nik_for_owner("3201014101900001") == "3201**********01"
    assert mask_card("5049123412341234") == "**** **** **** 1234"
