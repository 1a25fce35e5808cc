"""A seeded, labelled set of sentences for measuring a PII detector: `generate(count, seed)`.

The same count and seed give the same cases (for one faker version), so a detector's numbers can
be compared across changes. About a third of the cases hold no PII at all, only look-alikes,
because over-redaction of feedback is a failure too. Spans are exact character offsets.
"""

from __future__ import annotations

import random
import string
from typing import NamedTuple

from faker import Faker

from bench import pii_lookalikes as lookalike
from bench import pii_values as value
from bench.pii_templates import FEEDBACK, METADATA, NEGATIVE, TICKETS
from server.service.pii.entities import Entity

DEFAULT_COUNT = 2500
DEFAULT_SEED = 20240501
NEGATIVE_SHARE = 0.35

# The service's entity names (a StrEnum, so each is also its plain string), in its order.
(
    EMAIL,
    PHONE_NUMBER,
    CREDIT_CARD,
    IBAN,
    IP_ADDRESS,
    US_SSN,
    CA_SIN,
    CA_POSTAL_CODE,
    SECRET,
    PERSON,
) = Entity
ENTITIES: tuple[str, ...] = tuple(Entity)

PII_FIELDS: dict[str, tuple[str, value.Maker]] = {
    "email": (EMAIL, value.email),
    "phone": (PHONE_NUMBER, value.phone_number),
    "card": (CREDIT_CARD, value.credit_card),
    "iban": (IBAN, value.iban),
    "ip": (IP_ADDRESS, value.ip_address),
    "ssn": (US_SSN, value.us_ssn),
    "sin": (CA_SIN, value.ca_sin),
    "sin_bare": (CA_SIN, value.ca_sin_unseparated),
    "postal": (CA_POSTAL_CODE, value.ca_postal_code),
    "key": (SECRET, value.api_key),
    "bearer": (SECRET, value.bearer_token),
    "secret": (SECRET, value.secret_value),
    "person": (PERSON, value.person),
    "titled": (PERSON, value.titled_person),
}
LOOKALIKE_FIELDS: dict[str, value.Maker] = {
    "order": lookalike.order_number,
    "price": lookalike.price,
    "date": lookalike.date,
    "time": lookalike.time_of_day,
    "version": lookalike.version,
    "uuid": lookalike.uuid_text,
    "sha": lookalike.sha256,
    "commit": lookalike.git_commit,
    "model": lookalike.model_name,
    "digits16": lookalike.not_luhn_16,
    "digits9": lookalike.not_luhn_9,
    "path": lookalike.file_path,
    "url": lookalike.url,
    "product": lookalike.product_code,
}


class Span(NamedTuple):
    """A gold entity: `text[start:end]` is the PII, `entity` one of ENTITIES."""

    start: int
    end: int
    entity: str


class Case(NamedTuple):
    """One labelled text; no spans means nothing in it should be flagged."""

    text: str
    spans: tuple[Span, ...]


def fields(template: str) -> list[str]:
    """The field names of a template, in order (doubled braces are literal)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def template_entities(template: str) -> frozenset[str]:
    """The entities a template's fields produce."""
    return frozenset(PII_FIELDS[name][0] for name in fields(template) if name in PII_FIELDS)


def generate(count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED) -> list[Case]:
    """`count` cases, NEGATIVE_SHARE of them without PII, the rest cycling through ENTITIES.

    Each positive case picks a template holding the entity whose turn it is, so every entity
    gets about the same number of cases however the templates are spread.
    """
    rng = random.Random(seed)
    fakers = Faker(sorted({*value.LOCALES, *value.IBAN_LOCALES}))
    fakers.seed_instance(seed)
    positives = FEEDBACK + METADATA + TICKETS
    by_entity = {
        entity: [template for template in positives if entity in template_entities(template)]
        for entity in ENTITIES
    }
    negatives = round(count * NEGATIVE_SHARE)
    kinds = [False] * negatives + [True] * (count - negatives)
    rng.shuffle(kinds)
    cases = []
    turn = 0
    for positive in kinds:
        if positive:
            template = rng.choice(by_entity[ENTITIES[turn % len(ENTITIES)]])
            turn += 1
        else:
            template = rng.choice(NEGATIVE)
        locale = rng.choices(value.LOCALES, weights=value.LOCALE_WEIGHTS)[0]
        cases.append(render(template, rng, value.Identity(fakers, locale)))
    return cases


def render(template: str, rng: random.Random, identity: value.Identity) -> Case:
    """The template with each field filled by its maker, and the spans of the PII fields."""
    parts: list[str] = []
    spans: list[Span] = []
    length = 0
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        length += len(literal)
        if name is None:
            continue
        entity: str | None = None
        if name in PII_FIELDS:
            entity, maker = PII_FIELDS[name]
        else:
            maker = LOOKALIKE_FIELDS[name]
        made = maker(rng, identity)
        parts.append(made.lead + made.text)
        length += len(made.lead)
        if entity is not None:
            spans.append(Span(length, length + len(made.text), entity))
        length += len(made.text)
    return Case("".join(parts), tuple(spans))
