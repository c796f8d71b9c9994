"""Masking of personal data (NIK, KK, phone, name, account) for logs, artifacts and errors.

The database holds personal data in full; anything that prints it goes through here.
"""

import re

_PHONE_PREFIX = "+62"
# One pass over the text so a phone's digits are never re-read as part of a NIK.
_PERSONAL_NUMBER = re.compile(r"(?P<phone>\+62\d{8,13}(?!\d))|(?P<nik>(?<!\d)\d{16}(?!\d))")


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


def _mask_match(match: re.Match[str]) -> str:
    if match.group("phone") is not None:
        return mask_phone(match.group("phone"))
    return mask_nik(match.group("nik"))


def mask_text(text: str) -> str:
    """Mask every standalone 16-digit number (NIK, KK) and every `+62` phone inside free text."""
    return _PERSONAL_NUMBER.sub(_mask_match, text)


def mask_nik_for_owner(nik: str) -> str:
    """`3201**********01`: how the dashboard shows a signed-in person their NIK (portal.md)."""
    return nik[:4] + "*" * 10 + nik[-2:]


def mask_card(card: str | None) -> str:
    """`**** **** **** 1234`: the last four digits of a card number."""
    return "**** **** **** " + (card or "")[-4:]
