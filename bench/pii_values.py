"""PII values for the labelled evaluation set: each one valid by the rules a detector may check.

A detector that validates (Luhn, IBAN check digits, phone metadata, SSN ranges) must not be
penalised by a gold value that would fail the same check, so every maker here produces values
that pass it. Every value is random: none is a real card, key or person on purpose.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import string
from collections.abc import Callable
from typing import NamedTuple

import phonenumbers
from faker import Faker
from phonenumbers import PhoneNumberFormat, PhoneNumberType

LOCALES = (
    "en_US",
    "en_CA",
    "fr_CA",
    "en_GB",
    "fr_FR",
    "de_DE",
    "es_ES",
    "it_IT",
    "nl_NL",
    "pt_BR",
    "en_IN",
)
"""Where identities come from; en_US and en_CA first and weighted up, the service's home market."""
LOCALE_WEIGHTS = (4, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1)
IBAN_LOCALES = (
    "en_GB",
    "fr_FR",
    "de_DE",
    "es_ES",
    "it_IT",
    "nl_NL",
    "pt_BR",
    "nl_BE",
    "de_CH",
    "pl_PL",
    "pt_PT",
    "de_AT",
)
"""Faker locales whose `iban()` gives their own country's IBAN (en_US and en_IN give GB ones)."""

TITLES = {
    "en": ("Dr. ", "Mr. ", "Ms. ", "Mrs. ", "Prof. "),
    "fr": ("Mme ", "M. ", "Dr ", "Me "),
    "de": ("Herr ", "Frau ", "Dr. "),
    "es": ("Sr. ", "Sra. ", "Dra. "),
    "it": ("Sig. ", "Dott. ", "Sig.ra "),
    "nl": ("Dhr. ", "Mevr. ", "Dr. "),
    "pt": ("Sr. ", "Sra. ", "Dr. "),
}

# Real area codes, so that a national number parses as a valid NANP number for its region.
US_AREA_CODES = (
    "202",
    "206",
    "212",
    "213",
    "214",
    "303",
    "305",
    "312",
    "404",
    "415",
    "503",
    "512",
    "602",
    "617",
    "646",
    "702",
    "713",
    "718",
    "801",
    "919",
)
CA_AREA_CODES = (
    "204",
    "250",
    "306",
    "403",
    "416",
    "418",
    "438",
    "506",
    "514",
    "581",
    "587",
    "604",
    "613",
    "647",
    "705",
    "709",
    "778",
    "819",
    "867",
    "902",
)
TOLL_FREE_CODES = ("800", "833", "844", "855", "866", "877", "888")
INTERNATIONAL_REGIONS = (
    "FR",
    "GB",
    "DE",
    "ES",
    "IT",
    "NL",
    "BR",
    "IN",
    "BE",
    "CH",
    "AU",
    "JP",
    "MX",
    "SE",
    "PL",
    "IE",
    "PT",
    "AT",
    "US",
    "CA",
)

CARD_TYPES = ("visa16", "visa16", "mastercard", "mastercard", "amex", "discover", "jcb16", "diners")
CARD_GROUPS = {14: (4, 6, 4), 15: (4, 6, 5), 16: (4, 4, 4, 4), 19: (4, 4, 4, 4, 3)}

SIN_FIRST_DIGITS = "1234567" + "9"
"""0 is unassigned and 8 is unused; 9 marks temporary residents."""
POSTAL_FIRST_LETTERS = "ABCEGHJKLMNPRSTVXY"
"""D, F, I, O, Q and U are never used, and W and Z never start a code."""
POSTAL_OTHER_LETTERS = "ABCEGHJKLMNPRSTVWXYZ"

BASE62 = string.ascii_letters + string.digits
BASE64URL = BASE62 + "-_"
AWS_KEY_ALPHABET = string.ascii_uppercase + "234567"
PASSWORD_ALPHABET = BASE62 + "!@#$%^&*_-"
"""No quotes, spaces, commas or full stops: a value must end where the template's text starts."""


class Identity(NamedTuple):
    """Whose values a case holds: one Faker over every locale, and the case's own locale."""

    fakers: Faker
    locale: str

    @property
    def fake(self) -> Faker:
        """The generator of the case's locale."""
        return self.fakers[self.locale]

    @property
    def language(self) -> str:
        """The locale's language code: "fr" for fr_CA."""
        return self.locale.split("_")[0]


class Value(NamedTuple):
    """A made value: `text` is the gold span; `lead` precedes it and is not part of it."""

    text: str
    lead: str = ""


Maker = Callable[[random.Random, Identity], Value]


def luhn_check_digit(payload: str) -> str:
    """The digit that makes `payload` + digit pass the Luhn check."""
    total = 0
    for position, character in enumerate(reversed(payload)):
        digit = int(character)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def passes_luhn(number: str) -> bool:
    """Whether the digits of `number` pass the Luhn check."""
    digits = "".join(character for character in number if character.isdigit())
    return luhn_check_digit(digits[:-1]) == digits[-1]


def digits(rng: random.Random, count: int) -> str:
    """`count` random decimal digits."""
    return "".join(rng.choice(string.digits) for _ in range(count))


def characters(rng: random.Random, alphabet: str, count: int) -> str:
    """`count` random characters of `alphabet`."""
    return "".join(rng.choice(alphabet) for _ in range(count))


def group(number: str, sizes: tuple[int, ...], separator: str) -> str:
    """`number` cut into groups of `sizes` joined by `separator`."""
    parts, start = [], 0
    for size in sizes:
        parts.append(number[start : start + size])
        start += size
    return separator.join(part for part in parts if part)


def email(rng: random.Random, identity: Identity) -> Value:
    """A faker address, or one with a + tag, a subdomain, or in upper case."""
    fake = identity.fake
    kind = rng.random()
    if kind < 0.45:
        address = rng.choice((fake.email, fake.free_email, fake.company_email))()
    else:
        local = fake.user_name()
        if kind < 0.65:
            local += "+" + rng.choice(("feedback", "bot", "test", "billing", "2024", "news"))
        domain = fake.domain_name()
        if kind >= 0.65 and kind < 0.85:
            domain = rng.choice(("mail.", "eu.", "support.", "corp.mail.")) + domain
        address = f"{local}@{domain}"
    if rng.random() < 0.1:
        address = address.upper()
    return Value(address)


def phone_number(rng: random.Random, identity: Identity) -> Value:
    """A number valid per phonenumbers: US/CA national formats or another country's +CC form."""
    if rng.random() < 0.55:
        return Value(_national_nanp(rng))
    return Value(_international(rng, rng.choice(INTERNATIONAL_REGIONS)))


def _national_nanp(rng: random.Random) -> str:
    region = rng.choice(("US", "CA"))
    for _ in range(100):
        toll_free = rng.random() < 0.12
        if toll_free:
            area = rng.choice(TOLL_FREE_CODES)
        else:
            area = rng.choice(US_AREA_CODES if region == "US" else CA_AREA_CODES)
        exchange = rng.choice("23456789") + digits(rng, 2)
        line = digits(rng, 4)
        if toll_free:
            text = f"1-{area}-{exchange}-{line}"
        else:
            text = rng.choice(
                (
                    f"({area}) {exchange}-{line}",
                    f"{area}-{exchange}-{line}",
                    f"{area}.{exchange}.{line}",
                    f"{area} {exchange} {line}",
                    f"1-{area}-{exchange}-{line}",
                    f"+1 {area} {exchange} {line}",
                    f"+1-{area}-{exchange}-{line}",
                )
            )
        if phonenumbers.is_valid_number(phonenumbers.parse(text, region)):
            return text
    raise RuntimeError(f"no valid {region} number in 100 tries")


def _international(rng: random.Random, region: str) -> str:
    kind = rng.choice((PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE))
    example = phonenumbers.example_number_for_type(region, kind)
    if example is None:
        raise RuntimeError(f"phonenumbers has no example for {region}")
    national = phonenumbers.national_significant_number(example)
    # Random digits after a short prefix; when they form no valid number, keep more of the prefix.
    for attempt in range(200):
        keep = min(len(national) - 1, 2 + attempt // 40)
        candidate = national[:keep] + digits(rng, len(national) - keep)
        number = phonenumbers.parse(f"+{example.country_code}{candidate}")
        if phonenumbers.is_valid_number(number):
            break
    else:
        number = example
    if rng.random() < 0.15:
        return phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)


def credit_card(rng: random.Random, identity: Identity) -> Value:
    """A faker card number (Luhn-valid) grouped the way its brand prints it, or not at all."""
    number = identity.fake.credit_card_number(card_type=rng.choice(CARD_TYPES))
    separator = rng.choice((" ", " ", "-", ""))
    return Value(group(number, CARD_GROUPS[len(number)], separator) if separator else number)


def iban(rng: random.Random, identity: Identity) -> Value:
    """A faker IBAN (valid check digits) of the case's country or another, by 4 or unbroken."""
    locale = identity.locale if identity.locale in IBAN_LOCALES else rng.choice(IBAN_LOCALES)
    number = identity.fakers[locale].iban()
    if rng.random() < 0.6:
        number = " ".join(number[start : start + 4] for start in range(0, len(number), 4))
    return Value(number)


def ip_address(rng: random.Random, identity: Identity) -> Value:
    """IPv4, public or private, or IPv6, full or compressed."""
    kind = rng.random()
    if kind < 0.35:
        while True:
            address = ipaddress.IPv4Address(rng.getrandbits(32))
            if address.is_global:
                return Value(str(address))
    if kind < 0.65:
        return Value(
            rng.choice(
                (
                    f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                )
            )
        )
    groups = [rng.getrandbits(16) for _ in range(8)]
    groups[0] = rng.choice((0x2001, 0x2600, 0x2A00, 0x2A02, 0x2C0F, 0xFE80))
    if groups[0] == 0xFE80:
        groups[1:4] = [0, 0, 0]
    elif rng.random() < 0.6:
        zeros = rng.randrange(2, 4)
        start = rng.randrange(2, 8 - zeros)
        groups[start : start + zeros] = [0] * zeros
    address6 = ipaddress.IPv6Address(sum(part << (16 * (7 - i)) for i, part in enumerate(groups)))
    return Value(address6.exploded if kind < 0.8 else address6.compressed)


def us_ssn(rng: random.Random, identity: Identity) -> Value:
    """NNN-NN-NNNN in the issued ranges: area not 000, 666 or 9xx, group not 00, serial not 0000."""
    while True:
        area = rng.randrange(1, 900)
        if area != 666:
            break
    return Value(f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}")


def ca_sin_digits(rng: random.Random) -> str:
    """Nine digits passing Luhn whose first digit is a province's or a temporary resident's."""
    payload = rng.choice(SIN_FIRST_DIGITS) + digits(rng, 7)
    return payload + luhn_check_digit(payload)


def ca_sin(rng: random.Random, identity: Identity) -> Value:
    """A SIN grouped 3-3-3 by spaces or dashes."""
    return Value(group(ca_sin_digits(rng), (3, 3, 3), rng.choice((" ", "-"))))


def ca_sin_unseparated(rng: random.Random, identity: Identity) -> Value:
    """A SIN as nine bare digits; templates put it after a context word ("SIN", "NAS")."""
    return Value(ca_sin_digits(rng))


def ca_postal_code(rng: random.Random, identity: Identity) -> Value:
    """A1A 1A1 with the letters Canada Post uses; a few without the space."""
    first = rng.choice(POSTAL_FIRST_LETTERS) + rng.choice(string.digits)
    first += rng.choice(POSTAL_OTHER_LETTERS)
    second = rng.choice(string.digits) + rng.choice(POSTAL_OTHER_LETTERS)
    second += rng.choice(string.digits)
    return Value(first + ("" if rng.random() < 0.1 else " ") + second)


def api_key(rng: random.Random, identity: Identity) -> Value:
    """A token in one of the well-known key formats (OpenAI, GitHub, Slack, AWS, Google...)."""
    makers: tuple[Callable[[], str], ...] = (
        lambda: "sk-" + characters(rng, BASE62, 20) + "T3BlbkFJ" + characters(rng, BASE62, 20),
        lambda: "sk-" + characters(rng, BASE62, 48),
        lambda: "sk-proj-" + characters(rng, BASE64URL, rng.randrange(48, 120)),
        lambda: "ghp_" + characters(rng, BASE62, 36),
        lambda: "github_pat_" + characters(rng, BASE62, 22) + "_" + characters(rng, BASE62, 59),
        lambda: f"xoxb-{digits(rng, 12)}-{digits(rng, 13)}-{characters(rng, BASE62, 24)}",
        lambda: "AKIA" + characters(rng, AWS_KEY_ALPHABET, 16),
        lambda: "AIza" + characters(rng, BASE64URL, 35),
        lambda: "glpat-" + characters(rng, BASE64URL, 20),
        lambda: jwt(rng),
    )
    return Value(rng.choice(makers)())


def jwt(rng: random.Random) -> str:
    """Header, payload and signature, each base64url without padding (so each starts eyJ)."""
    header = {"alg": rng.choice(("HS256", "RS256")), "typ": "JWT"}
    payload = {"sub": digits(rng, 10), "iat": 1_700_000_000 + rng.randrange(50_000_000)}
    parts = [
        _base64url(json.dumps(header, separators=(",", ":")).encode()),
        _base64url(json.dumps(payload, separators=(",", ":")).encode()),
        _base64url(rng.randbytes(32)),
    ]
    return ".".join(parts)


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bearer_token(rng: random.Random, identity: Identity) -> Value:
    """What follows "Bearer ": a JWT or an opaque token."""
    if rng.random() < 0.5:
        return Value(jwt(rng))
    return Value(characters(rng, BASE64URL, rng.randrange(32, 64)))


def secret_value(rng: random.Random, identity: Identity) -> Value:
    """The value of a password or key assignment: a password or a random key."""
    if rng.random() < 0.5:
        body = characters(rng, PASSWORD_ALPHABET, rng.randrange(10, 20))
        return Value(rng.choice(string.ascii_letters) + body)
    return Value(characters(rng, BASE62, rng.choice((24, 32, 40))))


def person(rng: random.Random, identity: Identity) -> Value:
    """First and last name from the case's locale, some with a middle initial."""
    fake = identity.fake
    if rng.random() < 0.15:
        middle = rng.choice(string.ascii_uppercase)
        return Value(f"{fake.first_name()} {middle}. {fake.last_name()}")
    return Value(f"{fake.first_name()} {fake.last_name()}")


def titled_person(rng: random.Random, identity: Identity) -> Value:
    """A name after a title of its locale's language; the title is not part of the span."""
    name = person(rng, identity)
    return Value(name.text, rng.choice(TITLES.get(identity.language, TITLES["en"])))
