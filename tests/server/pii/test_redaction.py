"""Each mode does what it says to every field class, counts what it replaced, and hashes texts
the way the record says."""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from datetime import UTC, datetime

import pytest

from server.service.pii.detector import Detector
from server.service.pii.redaction import (
    DEFAULT_MODES,
    FieldClass,
    Mode,
    Redactor,
    TextHasher,
)
from server.service.privacy import Privacy
from storage.records import Label, NewEvent, NewFeedback, NewInteraction

KEY = b"k" * 32
DETECTOR = Detector()
NOW = datetime(2026, 12, 3, tzinfo=UTC)


def test_placeholders_replace_values_and_counts_name_their_types() -> None:
    counts: Counter[str] = Counter()
    text = Redactor(DETECTOR).text(
        FieldClass.TEXT, "a@b.example and c@d.example, card 4111111111111111", counts
    )
    assert text == "<EMAIL> and <EMAIL>, card <CREDIT_CARD>"
    assert counts == {"EMAIL": 2, "CREDIT_CARD": 1}


def test_keyed_hashes_group_equal_values_in_any_spelling() -> None:
    redactor = Redactor(DETECTOR, dict.fromkeys(FieldClass, Mode.HASH), key=KEY)
    counts: Counter[str] = Counter()
    first = redactor.text(FieldClass.TEXT, "mail Ann@Example.com", counts)
    again = redactor.text(FieldClass.TEXT, "mail ann@example.com", counts)
    other = redactor.text(FieldClass.TEXT, "mail bob@example.com", counts)
    phone_a = redactor.text(FieldClass.TEXT, "(415) 555-2671", counts)
    phone_b = redactor.text(FieldClass.TEXT, "415.555.2671", counts)
    assert first == again != other
    assert first.startswith("mail <EMAIL:")
    assert len(first) == len("mail <EMAIL:>") + 12
    assert phone_a == phone_b
    other_key = Redactor(DETECTOR, dict.fromkeys(FieldClass, Mode.HASH), key=b"x" * 32)
    assert other_key.text(FieldClass.TEXT, "mail ann@example.com", Counter()) != first


def test_hash_mode_needs_a_long_enough_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Redactor(DETECTOR, {FieldClass.TEXT: Mode.HASH}, key=b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        Redactor(DETECTOR, {FieldClass.TEXT: Mode.HASH})


def test_keep_leaves_a_class_alone() -> None:
    redactor = Redactor(DETECTOR, {**DEFAULT_MODES, FieldClass.DETAILS: Mode.KEEP})
    counts: Counter[str] = Counter()
    assert redactor.json(FieldClass.DETAILS, {"e": "a@b.example"}, counts) == {"e": "a@b.example"}
    assert not counts


def test_json_values_are_redacted_at_any_depth_and_keys_kept() -> None:
    counts: Counter[str] = Counter()
    value = {
        "a@b.example": "x",
        "nested": {"list": ["call +44 20 7946 0958", 1.5, None, True]},
        "card": 4111111111111111.0,
        "count": 12345678.0,
    }
    redacted = Redactor(DETECTOR).json(FieldClass.METADATA, value, counts)
    assert redacted == {
        "a@b.example": "x",
        "nested": {"list": ["call <PHONE_NUMBER>", 1.5, None, True]},
        "card": "<CREDIT_CARD>",
        "count": 12345678.0,
    }
    assert counts == {"PHONE_NUMBER": 1, "CREDIT_CARD": 1}


def test_free_labels_keep_a_labels_shape() -> None:
    counts: Counter[str] = Counter()
    assert Redactor(DETECTOR).label("4155552671", counts) == "phone_number"
    hashed = Redactor(DETECTOR, dict.fromkeys(FieldClass, Mode.HASH), key=KEY)
    assert hashed.label("4155552671", counts).startswith("phone_number-")
    assert Redactor(DETECTOR).label("good", counts) == "good"


def test_privacy_redacts_each_kind_and_records_the_counts() -> None:
    privacy = Privacy(redactor=Redactor(DETECTOR), free_labels=True)
    feedback = privacy.redacted(
        NewFeedback(
            conversation_id="c",
            rating=Label("4155552671"),
            text="mail a@b.example",
            metadata={"ip": "10.0.0.1"},
            create_time=NOW,
        )
    )
    assert (feedback.text, feedback.rating, feedback.metadata) == (
        "mail <EMAIL>",
        Label("phone_number"),
        {"ip": "<IP_ADDRESS>"},
    )
    assert feedback.redactions == {"EMAIL": 1, "PHONE_NUMBER": 1, "IP_ADDRESS": 1}
    event = privacy.redacted(
        NewEvent(
            user_id="u",
            event_type="t",
            details={"k": "123-45-6789"},
            event_time=NOW,
            receive_time=NOW,
        )
    )
    assert (event.details, event.redactions) == ({"k": "<US_SSN>"}, {"US_SSN": 1})
    plain = NewInteraction(
        conversation_id="c", metadata={"k": "fine"}, occur_time=NOW, create_time=NOW
    )
    assert privacy.redacted(plain) is plain


def test_labels_from_an_allow_list_are_not_scanned() -> None:
    privacy = Privacy(redactor=Redactor(DETECTOR), free_labels=False)
    item = NewFeedback(conversation_id="c", rating=Label("4155552671"), create_time=NOW)
    assert privacy.redacted(item) is item


def test_text_hashes_are_plain_sha256_or_hmac_under_a_derived_key() -> None:
    assert TextHasher()("hi") == hashlib.sha256(b"hi").hexdigest()
    assert TextHasher().kind == "sha256"
    keyed = TextHasher(KEY)
    derived = hmac.new(KEY, b"llm-feedback/text", hashlib.sha256).digest()
    assert keyed("hi") == hmac.new(derived, b"hi", hashlib.sha256).hexdigest()
    assert keyed.kind == "hmac-sha256"
    with pytest.raises(ValueError, match="32 bytes"):
        TextHasher(b"short")
