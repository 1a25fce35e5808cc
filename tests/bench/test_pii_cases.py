"""The labelled PII set: exact spans, valid gold values, determinism, coverage, negatives."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable

import phonenumbers
import pytest
from faker import Faker

from bench import pii_cases
from bench.pii_cases import (
    CA_POSTAL_CODE,
    CA_SIN,
    CREDIT_CARD,
    DEFAULT_COUNT,
    EMAIL,
    ENTITIES,
    IBAN,
    IP_ADDRESS,
    PERSON,
    PHONE_NUMBER,
    SECRET,
    US_SSN,
    Case,
    generate,
)
from bench.pii_values import (
    POSTAL_FIRST_LETTERS,
    POSTAL_OTHER_LETTERS,
    Identity,
    Value,
    passes_luhn,
)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    """The default set, built once."""
    return generate()


def _values(cases: list[Case], entity: str) -> list[str]:
    return [case.text[s.start : s.end] for case in cases for s in case.spans if s.entity == entity]


def test_spans_are_exactly_the_inserted_values(monkeypatch: pytest.MonkeyPatch) -> None:
    inserted: list[str] = []

    def recording(maker: Callable[[random.Random, Identity], Value]) -> Callable[..., Value]:
        def make(rng: random.Random, identity: Identity) -> Value:
            made = maker(rng, identity)
            inserted.append(made.text)
            return made

        return make

    fields = {
        name: (entity, recording(maker)) for name, (entity, maker) in pii_cases.PII_FIELDS.items()
    }
    monkeypatch.setattr(pii_cases, "PII_FIELDS", fields)

    made = generate(600, seed=3)

    assert [case.text[s.start : s.end] for case in made for s in case.spans] == inserted


def test_spans_are_in_order_inside_the_text_and_trimmed(cases: list[Case]) -> None:
    for case in cases:
        previous_end = 0
        for span in case.spans:
            value = case.text[span.start : span.end]
            assert previous_end <= span.start < span.end <= len(case.text), case
            assert value == value.strip(), case.text
            assert not value.endswith((".", ",", ";", ":", ")", ">", "'", '"')), case.text
            # A span is a whole token: the characters beside it are not part of the value.
            before = case.text[span.start - 1 : span.start]
            after = case.text[span.end : span.end + 1]
            assert not before.isalnum(), case.text
            assert not after.isalnum(), case.text
            assert span.entity in ENTITIES
            previous_end = span.end


def test_a_title_is_outside_the_name() -> None:
    rng = random.Random(1)
    identity = Identity(Faker("fr_CA"), "fr_CA")
    identity.fakers.seed_instance(1)
    case = pii_cases.render("Merci à {titled}.", rng, identity)
    (span,) = case.spans
    assert case.text[: span.start].removeprefix("Merci à ") in {"Mme ", "M. ", "Dr ", "Me "}
    assert case.text[span.end :] == "."


def test_same_seed_same_cases_other_seed_other_cases() -> None:
    assert generate(300, seed=7) == generate(300, seed=7)
    assert generate(300, seed=7) != generate(300, seed=8)


def test_default_set_size_coverage_and_negatives(cases: list[Case]) -> None:
    counts = Counter(span.entity for case in cases for span in case.spans)
    negatives = [case for case in cases if not case.spans]

    assert len(cases) == DEFAULT_COUNT >= 2000
    assert {entity: counts[entity] >= 100 for entity in ENTITIES} == dict.fromkeys(ENTITIES, True)
    assert 0.33 <= len(negatives) / len(cases) <= 0.37
    assert sum(1 for case in cases if len(case.spans) >= 3) >= 100
    negative_text = " ".join(case.text for case in negatives)
    for lookalike in ("May", "Will", "Grace", "Thanks to", "gpt-4o-2024-08-06", "v"):
        assert lookalike in negative_text
    assert re.search(r"\b\d{2}:\d{2}:\d{2}\b", negative_text)
    assert re.search(r"\b[0-9a-f]{64}\b", negative_text)
    assert re.search(r"\b[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-", negative_text)


def test_lookalike_digit_runs_fail_luhn(cases: list[Case]) -> None:
    negative_text = " ".join(case.text for case in cases if not case.spans)
    sixteen = re.findall(r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b", negative_text)
    nine = re.findall(r"(?<![\d.,-])\d{3}[ -]?\d{3}[ -]?\d{3}(?![\d.,-])", negative_text)
    assert len(sixteen) >= 20
    assert len(nine) >= 20
    assert not [number for number in sixteen + nine if passes_luhn(number)]


def test_emails_phones_and_cards_are_valid(cases: list[Case]) -> None:
    emails = _values(cases, EMAIL)
    assert all(re.fullmatch(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", email) for email in emails)
    assert any("+" in email for email in emails)
    assert any(email.isupper() for email in emails)
    phones = _values(cases, PHONE_NUMBER)
    for phone in phones:
        regions = (None,) if phone.startswith("+") else ("US", "CA")
        assert any(
            phonenumbers.is_valid_number(phonenumbers.parse(phone, region)) for region in regions
        ), phone
    assert any(phone.startswith("(") for phone in phones)
    assert any(phone.startswith("+33 ") for phone in phones)
    cards = _values(cases, CREDIT_CARD)
    assert all(passes_luhn(card) and re.fullmatch(r"[\d -]{13,23}", card) for card in cards)
    assert {card[0] for card in cards} >= {"3", "4", "5", "6"}


def test_ibans_have_valid_check_digits(cases: list[Case]) -> None:
    ibans = [iban.replace(" ", "") for iban in _values(cases, IBAN)]
    for iban in ibans:
        rearranged = iban[4:] + iban[:4]
        assert int("".join(str(int(character, 36)) for character in rearranged)) % 97 == 1, iban
    assert len({iban[:2] for iban in ibans}) >= 8


def test_ip_addresses_cover_v4_and_v6(cases: list[Case]) -> None:
    import ipaddress

    addresses = [ipaddress.ip_address(text) for text in _values(cases, IP_ADDRESS)]
    assert any(a.version == 4 and a.is_private for a in addresses)
    assert any(a.version == 4 and a.is_global for a in addresses)
    texts = _values(cases, IP_ADDRESS)
    assert any("::" in text for text in texts)
    assert any(text.count(":") == 7 for text in texts)


def test_ssn_sin_and_postal_codes_follow_their_rules(cases: list[Case]) -> None:
    for ssn in _values(cases, US_SSN):
        area, group, serial = ssn.split("-")
        assert area not in {"000", "666"}, ssn
        assert area[0] != "9", ssn
        assert group != "00", ssn
        assert serial != "0000", ssn
    sins = _values(cases, CA_SIN)
    for sin in sins:
        bare = re.sub(r"[ -]", "", sin)
        assert len(bare) == 9, sin
        assert passes_luhn(bare), sin
        assert bare[0] not in "08", sin
    assert any(sin.isdigit() for sin in sins)
    postal = re.compile(
        f"[{POSTAL_FIRST_LETTERS}]\\d[{POSTAL_OTHER_LETTERS}] ?\\d[{POSTAL_OTHER_LETTERS}]\\d"
    )
    assert all(postal.fullmatch(code) for code in _values(cases, CA_POSTAL_CODE))


def test_secrets_and_names(cases: list[Case]) -> None:
    secrets = _values(cases, SECRET)
    for prefix in (
        "sk-",
        "sk-proj-",
        "ghp_",
        "github_pat_",
        "xoxb-",
        "AKIA",
        "AIza",
        "glpat-",
        "eyJ",
    ):
        assert any(secret.startswith(prefix) for secret in secrets), prefix
    # After "Bearer " comes the token alone: a SECRET span starts right there.
    bearer = [case for case in cases if "Bearer " in case.text]
    assert bearer
    for case in bearer:
        token_start = case.text.index("Bearer ") + len("Bearer ")
        starts = {span.start for span in case.spans if span.entity == SECRET}
        assert token_start in starts, case.text
    names = _values(cases, PERSON)
    assert all(" " in name and not name.startswith(("Dr", "Mme", "Mr")) for name in names)
    assert any(re.search(r" [A-Z]\. ", name) for name in names)
