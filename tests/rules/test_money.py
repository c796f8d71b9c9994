import pytest

from rules.money import (
    BENEFIT,
    card_number_for,
    credit_idempotency_key,
    luhn_valid,
    message_key,
    require_rupiah,
    statement_reference,
)


def test_keys_derive_from_one_business_reference():
    assert credit_idempotency_key(1, "3171010101800001") == "w1:3171010101800001:training"
    assert BENEFIT == "training"
    assert statement_reference(1) == "wave-1/training"
    assert message_key(2, "3171010101800001", "balance_credited") == (
        "w2:3171010101800001:balance_credited"
    )


def test_credit_keys_differ_per_wave_nik_and_benefit():
    keys = {
        credit_idempotency_key(1, "3171010101800001"),
        credit_idempotency_key(2, "3171010101800001"),
        credit_idempotency_key(1, "3171010101800002"),
        credit_idempotency_key(1, "3171010101800001", "other"),
    }
    assert len(keys) == 4


@pytest.mark.parametrize("serial", [1, 2, 42, 99_999_999_999])
def test_card_numbers_are_sixteen_digits_with_prefix_and_valid_luhn(serial):
    number = card_number_for(serial)
    assert len(number) == 16
    assert number.startswith("5049")
    assert int(number[4:15]) == serial
    assert luhn_valid(number)


def test_card_number_of_serial_one():
    assert card_number_for(1) == "5049000000000010"


def test_card_numbers_are_distinct():
    assert len({card_number_for(serial) for serial in range(1, 1001)}) == 1000


@pytest.mark.parametrize("serial", [0, -1, 100_000_000_000, True])
def test_card_number_refuses_a_serial_out_of_range(serial):
    with pytest.raises(ValueError):
        card_number_for(serial)


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("79927398713", True),
        ("79927398710", False),
        ("5049000000000010", True),
        ("5049000000000018", False),
        ("", False),
        ("7", False),
        ("7992739871a", False),
        ("٧٩٩٢٧٣٩٨٧١٣", False),
    ],
)
def test_luhn_valid(number, valid):
    assert luhn_valid(number) is valid


def test_any_single_digit_typo_breaks_the_card_number():
    number = card_number_for(123456)
    for position in range(16):
        digit = int(number[position])
        typo = number[:position] + str((digit + 1) % 10) + number[position + 1 :]
        assert not luhn_valid(typo)


def test_require_rupiah_accepts_a_positive_integer():
    assert require_rupiah(1_000_000) == 1_000_000


@pytest.mark.parametrize("amount", [1_000_000.0, 0, -5, True, "1000000", None])
def test_require_rupiah_refuses_floats_non_positive_and_non_integers(amount):
    with pytest.raises(ValueError):
        require_rupiah(amount)
