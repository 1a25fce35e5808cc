"""Text that looks like PII and is not: what a redactor must leave alone in feedback.

Each maker returns a value that shares a shape with some entity (digits that fail Luhn, a time
that looks like IPv6, a hex digest that looks like a key) so that false positives show up in
the evaluation. None of them is labelled.
"""

from __future__ import annotations

import random
import string
import uuid

from bench.pii_values import Identity, Value, digits, group, luhn_check_digit, passes_luhn

MODEL_NAMES = (
    "gpt-4o-2024-08-06",
    "gpt-4o-mini-2024-07-18",
    "gpt-4.1-2025-04-14",
    "o3-mini-2025-01-31",
    "claude-3-5-sonnet-20241022",
    "claude-3-haiku-20240307",
    "gemini-1.5-pro-002",
    "llama-3.1-70b-instruct",
    "mistral-large-2411",
    "text-embedding-3-small",
)
PATHS = (
    "/var/log/feedback/{date}.log",
    "/home/app/exports/report-{n}.csv",
    "/etc/feedback/config.yaml",
    "C:\\Program Files\\Feedback\\logs\\{date}.txt",
    "./data/session-{n}.jsonl",
    "~/Downloads/invoice_{n}.pdf",
    "s3://analytics-bucket/raw/{date}/part-{n}.parquet",
)
URLS = (
    "https://docs.example.com/v2/guide?page={small}#auth",
    "https://app.example.io/projects/{n}/settings",
    "https://status.example.net/incidents/{n}",
    "http://localhost:8080/api/v1/feedback?limit={small}",
    "https://example.org/blog/{date}/release-notes",
    "https://cdn.example.com/assets/app.{hex8}.js",
)
CURRENCY_FORMATS = ("${amount}", "{amount} €", "£{amount}", "USD {amount}", "CA${amount}")


def order_number(rng: random.Random, identity: Identity) -> Value:
    """Order and ticket references: short digit runs or letter-prefixed codes."""
    return Value(
        rng.choice(
            (
                f"#{rng.randrange(10_000, 999_999)}",
                f"ORD-{rng.randrange(2019, 2026)}-{digits(rng, 6)}",
                f"{rng.randrange(1_000_000, 99_999_999)}",
                f"INC{digits(rng, 7)}",
                f"case {rng.randrange(100, 99_999)}",
            )
        )
    )


def price(rng: random.Random, identity: Identity) -> Value:
    """An amount with a currency; thousands separators make digit groups."""
    amount = f"{rng.randrange(1, 5000):,}.{rng.randrange(100):02d}"
    return Value(rng.choice(CURRENCY_FORMATS).format(amount=amount))


def date(rng: random.Random, identity: Identity) -> Value:
    """ISO, US and European dates, and an ISO timestamp."""
    year, month, day = rng.randrange(2019, 2027), rng.randrange(1, 13), rng.randrange(1, 29)
    return Value(
        rng.choice(
            (
                f"{year}-{month:02d}-{day:02d}",
                f"{month:02d}/{day:02d}/{year}",
                f"{day}.{month}.{year}",
                f"{year}-{month:02d}-{day:02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:"
                f"{rng.randrange(60):02d}Z",
            )
        )
    )


def time_of_day(rng: random.Random, identity: Identity) -> Value:
    """12:30:45 and 9:15: colon-separated digits, as in compressed IPv6."""
    hour, minute, second = rng.randrange(24), rng.randrange(60), rng.randrange(60)
    return Value(
        rng.choice(
            (
                f"{hour:02d}:{minute:02d}:{second:02d}",
                f"{hour}:{minute:02d}",
                f"{hour}h{minute:02d}",
            )
        )
    )


def version(rng: random.Random, identity: Identity) -> Value:
    """Release versions, and four-part build numbers that cannot be IPv4 (a part above 255)."""
    major, minor, patch = rng.randrange(0, 20), rng.randrange(0, 40), rng.randrange(0, 30)
    return Value(
        rng.choice(
            (
                f"v{major}.{minor}.{patch}",
                f"{major}.{minor}.{patch}",
                f"{major}.{minor}.{patch}-rc.{rng.randrange(1, 5)}",
                f"10.0.{rng.randrange(19_041, 26_100)}.{rng.randrange(256, 5000)}",
            )
        )
    )


def uuid_text(rng: random.Random, identity: Identity) -> Value:
    """A request or session id."""
    return Value(str(uuid.UUID(int=rng.getrandbits(128), version=4)))


def sha256(rng: random.Random, identity: Identity) -> Value:
    """A 64-character hex digest: key-like length, but a checksum."""
    return Value(rng.randbytes(32).hex())


def git_commit(rng: random.Random, identity: Identity) -> Value:
    """A short or full commit hash."""
    return Value(rng.randbytes(20).hex()[: rng.choice((7, 12, 40))])


def model_name(rng: random.Random, identity: Identity) -> Value:
    """A model id with a date in it (gpt-4o-2024-08-06)."""
    return Value(rng.choice(MODEL_NAMES))


def not_luhn_16(rng: random.Random, identity: Identity) -> Value:
    """Sixteen digits with a card brand's first digit that fail Luhn, grouped as a card is."""
    payload = rng.choice("3456") + digits(rng, 14)
    wrong = (int(luhn_check_digit(payload)) + rng.randrange(1, 10)) % 10
    number = payload + str(wrong)
    assert not passes_luhn(number)
    return Value(group(number, (4, 4, 4, 4), rng.choice((" ", "-", ""))))


def not_luhn_9(rng: random.Random, identity: Identity) -> Value:
    """Nine digits that fail Luhn, bare or grouped 3-3-3 as a SIN is."""
    payload = rng.choice(string.digits[1:]) + digits(rng, 7)
    wrong = (int(luhn_check_digit(payload)) + rng.randrange(1, 10)) % 10
    number = payload + str(wrong)
    assert not passes_luhn(number)
    return Value(rng.choice((number, group(number, (3, 3, 3), " "), group(number, (3, 3, 3), "-"))))


def file_path(rng: random.Random, identity: Identity) -> Value:
    """A Unix, Windows or object-store path."""
    return Value(_fill(rng, rng.choice(PATHS)))


def url(rng: random.Random, identity: Identity) -> Value:
    """A URL with no user part, so with no e-mail in it."""
    return Value(_fill(rng, rng.choice(URLS)))


def product_code(rng: random.Random, identity: Identity) -> Value:
    """SKUs and part numbers: letters and digits in dashed groups."""
    letters = string.ascii_uppercase
    return Value(
        rng.choice(
            (
                f"SKU-{digits(rng, 5)}-{rng.choice(('BLK', 'WHT', 'RED', 'XL'))}",
                f"{rng.choice(letters)}{rng.choice(letters)}-{digits(rng, 4)}-"
                f"{rng.choice(letters)}{rng.choice(letters)}{rng.choice(letters)}",
                f"P/N {digits(rng, 3)}-{digits(rng, 4)}",
                f"model {rng.choice(letters)}{digits(rng, 3)}{rng.choice(letters)}",
                f"ISBN 978-{digits(rng, 1)}-{digits(rng, 3)}-{digits(rng, 5)}-{digits(rng, 1)}",
            )
        )
    )


def _fill(rng: random.Random, pattern: str) -> str:
    year, month, day = rng.randrange(2019, 2027), rng.randrange(1, 13), rng.randrange(1, 29)
    return pattern.format(
        date=f"{year}-{month:02d}-{day:02d}",
        n=rng.randrange(1, 99_999),
        small=rng.randrange(1, 50),
        hex8=rng.randbytes(4).hex(),
    )
