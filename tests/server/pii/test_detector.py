"""The detector finds each entity in its usual formats and leaves look-alikes alone."""

from __future__ import annotations

import pytest

from server.service.pii.detector import Detector
from server.service.pii.entities import Entity

DETECTOR = Detector(tuple(Entity), phone_regions=("US", "GB"))


def found(text: str) -> list[tuple[str, str]]:
    return [(text[start:end], entity.value) for start, end, entity in DETECTOR.find(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail john.doe+x@mail.example.co.uk.", [("john.doe+x@mail.example.co.uk", "EMAIL")]),
        ("call (415) 555-2671 today", [("(415) 555-2671", "PHONE_NUMBER")]),
        ("ring +33 1 23 45 67 89", [("+33 1 23 45 67 89", "PHONE_NUMBER")]),
        ("or 0044 20 7946 0958", [("0044 20 7946 0958", "PHONE_NUMBER")]),
        ("call 415-555-2671 2 times", [("415-555-2671", "PHONE_NUMBER")]),
        ("card 4111 1111 1111 1111 exp 12/27", [("4111 1111 1111 1111", "CREDIT_CARD")]),
        ("amex 3782-822463-10005", [("3782-822463-10005", "CREDIT_CARD")]),
        (
            "IBAN DE89 3704 0044 0532 0130 00 and more",
            [("DE89 3704 0044 0532 0130 00", "IBAN")],
        ),
        ("from 192.168.1.20:8080", [("192.168.1.20", "IP_ADDRESS")]),
        ("v6 2001:db8::8a2e:370:7334 here", [("2001:db8::8a2e:370:7334", "IP_ADDRESS")]),
        ("SSN 123-45-6789", [("123-45-6789", "US_SSN")]),
        ("SIN 130 692 544", [("130 692 544", "CA_SIN")]),
        ("postal K1A 0B1", [("K1A 0B1", "CA_POSTAL_CODE")]),
        (
            "key sk-proj-abcdefghijklmnopqrstuvwx12",
            [("sk-proj-abcdefghijklmnopqrstuvwx12", "SECRET")],
        ),
        ("Authorization: Bearer abcdefghijklmnop1234", [("abcdefghijklmnop1234", "SECRET")]),
        ("password=hunter2!", [("hunter2!", "SECRET")]),
        ("ask for Dr. Ada Lovelace", [("Ada Lovelace", "PERSON")]),
        ("thanks to John Smith.", [("John Smith", "PERSON")]),
    ],
)
def test_each_entity_is_found_with_its_bounds(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Order 4111111111111112 shipped",  # fails Luhn
        "sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "model gpt-4o-2024-08-06 on 2024-05-01 at 12:30:45",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "version 1.2.3 of std::vector",
        "May I ask? Will it work? Grace period is 30 days.",
        "Claude and Gemini gave different answers",
        "SIN 046 454 286",  # 0 is never issued
        "total: 1234.56 USD for 3 items",
    ],
)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert found(text) == []


def test_names_are_off_unless_enabled() -> None:
    without_names = Detector(frozenset(Entity) - {Entity.PERSON})
    assert without_names.find("thanks to John Smith") == []


def test_an_unknown_phone_region_is_refused() -> None:
    with pytest.raises(ValueError, match="XX"):
        Detector(phone_regions=("XX",))


def test_a_record_of_digit_groups_costs_a_bounded_number_of_phone_parses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past its budget a record's candidates are redacted unparsed: too much, never too little."""
    import phonenumbers

    from server.service.pii import detector as module

    parses = 0
    parse = phonenumbers.parse

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal parses
        parses += 1
        return parse(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(phonenumbers, "parse", counted)
    text = ("1 2 3 4 5 6 7 8 " * 200)[:2000]
    found = Detector(phone_regions=("US",)).find(text)

    budget = module.MIN_PHONE_PARSES + len(text) // module.CHARACTERS_PER_PHONE_PARSE
    assert parses == budget
    assert sum(end - start for start, end, _ in found) > len(text) / 2
