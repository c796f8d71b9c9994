"""Money and message identities: idempotency keys, statement references, card numbers, rupiah.

Every side effect carries a key derived from one business reference, so a rerun repeats it safely.
"""

BENEFIT = "training"

_CARD_PREFIX = "5049"
_CARD_SERIAL_DIGITS = 11
_CARD_SERIAL_MAX = 10**_CARD_SERIAL_DIGITS - 1


def credit_idempotency_key(wave_id: int, nik: str, benefit: str = BENEFIT) -> str:
    """The key of the one credit a (wave, NIK, benefit) may ever get at the card issuer."""
    return f"w{wave_id}:{nik}:{benefit}"


def statement_reference(wave_id: int, benefit: str = BENEFIT) -> str:
    """The reference under which the issuer's statement lists a wave's credits."""
    return f"wave-{wave_id}/{benefit}"


def message_key(wave_id: int, nik: str, template: str) -> str:
    """The key of the one message of a template a registrant may get in a wave."""
    return f"w{wave_id}:{nik}:{template}"


def _luhn_sum(digits: str) -> int:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total


def _luhn_check_digit(payload: str) -> str:
    # The check digit sits to the right, so the payload's doubling starts at its last digit.
    return str((10 - _luhn_sum(payload + "0") % 10) % 10)


def card_number_for(serial: int) -> str:
    """The 16-digit card number of the program's `serial`-th card: 5049, 11 digits, Luhn digit."""
    if isinstance(serial, bool) or not isinstance(serial, int):
        raise ValueError(f"card serial must be an int, got {type(serial).__name__}")
    if not 1 <= serial <= _CARD_SERIAL_MAX:
        raise ValueError(f"card serial out of range 1..{_CARD_SERIAL_MAX}: {serial}")
    payload = f"{_CARD_PREFIX}{serial:0{_CARD_SERIAL_DIGITS}d}"
    return payload + _luhn_check_digit(payload)


def luhn_valid(number: str) -> bool:
    """True for a string of at least two ASCII digits whose Luhn checksum holds."""
    if len(number) < 2 or not (number.isascii() and number.isdigit()):
        return False
    return _luhn_sum(number) % 10 == 0


def require_rupiah(amount: object) -> int:
    """Return `amount` if it is a positive integer number of rupiah; refuse anything else."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError(f"an amount must be integer rupiah, got {type(amount).__name__}")
    if amount <= 0:
        raise ValueError(f"an amount must be positive, got {amount}")
    return amount


def rupiah(amount: int) -> str:
    """`Rp1.000.000`: Indonesian thousands separators, no decimals (money is integer)."""
    sign = "-" if amount < 0 else ""
    return f"{sign}Rp{abs(int(amount)):,}".replace(",", ".")
