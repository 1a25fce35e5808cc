"""Check digits that tell a real identifier from a number of the same shape."""

from __future__ import annotations

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
"""Length of an IBAN per country (the SWIFT IBAN registry, 2025)."""


def luhn(digits: str) -> bool:
    """Whether `digits` (digits only) pass the Luhn check of payment cards and Canadian SINs."""
    total = 0
    for position, character in enumerate(reversed(digits)):
        digit = ord(character) - 48
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def iban(compact: str) -> bool:
    """Whether `compact` (upper case, no spaces) is an IBAN: its country's length and mod 97."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(character, 36)) for character in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


CARD_PREFIXES = (
    ("4", 13, 19),  # Visa
    ("51", 16, 16), ("52", 16, 16), ("53", 16, 16), ("54", 16, 16), ("55", 16, 16),  # Mastercard
    ("34", 15, 15), ("37", 15, 15),  # American Express
    ("6011", 16, 19), ("65", 16, 19), ("644", 16, 19), ("645", 16, 19), ("646", 16, 19),
    ("647", 16, 19), ("648", 16, 19), ("649", 16, 19),  # Discover
    ("35", 16, 19),  # JCB
    ("36", 14, 19), ("30", 14, 19), ("38", 14, 19), ("39", 14, 19),  # Diners Club
    ("62", 16, 19),  # UnionPay
    ("5018", 12, 19), ("5020", 12, 19), ("5038", 12, 19), ("5893", 12, 19), ("6304", 12, 19),
    ("6759", 12, 19), ("6761", 12, 19), ("6762", 12, 19), ("6763", 12, 19),  # Maestro
)  # fmt: skip
"""Issuer prefixes and lengths of the card networks: 16 digits that pass Luhn but start with 1,
7, 8 or 9 are an order number, not a card."""


_CARD_LENGTHS = {prefix: (low, high) for prefix, low, high in CARD_PREFIXES}


def card(digits: str) -> bool:
    """Whether `digits` are a payment card number: a network's prefix and length, and Luhn."""
    if not 12 <= len(digits) <= 19:
        return False
    known = any(
        low <= len(digits) <= high
        for low, high in (_CARD_LENGTHS.get(digits[:size], (0, 0)) for size in (1, 2, 3, 4))
    )
    if not known and not ("2221" <= digits[:4] <= "2720" and len(digits) == 16):  # Mastercard 2
        return False
    return luhn(digits)


def sin(digits: str) -> bool:
    """Whether nine digits are a Canadian Social Insurance Number (Luhn, no 0 or 8 first)."""
    return len(digits) == 9 and digits[0] not in "08" and luhn(digits)


def ssn(digits: str) -> bool:
    """Whether nine digits can be a US Social Security Number (the ranges never issued fail)."""
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (
        len(digits) == 9
        and area not in ("000", "666")
        and area[0] != "9"
        and group != "00"
        and serial != "0000"
    )


def book_number(digits: str) -> bool:
    """Whether digits are an ISBN-13 (13 digits from 978 or 979, check digit or not: a mistyped
    one is still no phone): "978-3-548-14744-8" holds a valid phone number's digits."""
    return len(digits) == 13 and digits[:3] in ("978", "979")
