"""Presidio's AnalyzerEngine behind our detector's `find`, as the baseline to compare with.

Only regex and checksum recognizers can work here: the spaCy pipeline is `spacy.blank("en")`,
which has no NER, so Presidio finds no PERSON; nothing is downloaded. Presidio is not a
dependency of the project: run this with a Python that has it (`/tmp/pvenv/bin/python -m
bench.pii_eval --detector presidio`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import spacy
import tldextract
import tldextract.tldextract
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import SpacyNlpEngine

from bench.pii_cases import (
    CA_POSTAL_CODE,
    CA_SIN,
    CREDIT_CARD,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    PERSON,
    PHONE_NUMBER,
    US_SSN,
)

OUR_ENTITIES = {
    "EMAIL_ADDRESS": EMAIL,
    "PHONE_NUMBER": PHONE_NUMBER,
    "CREDIT_CARD": CREDIT_CARD,
    "IBAN_CODE": IBAN,
    "IP_ADDRESS": IP_ADDRESS,
    "US_SSN": US_SSN,
    "CA_SIN": CA_SIN,
    "CA_POSTAL_CODE": CA_POSTAL_CODE,
    "PERSON": PERSON,
}
"""Presidio's names for ours. Its other entities (DATE_TIME, URL, US_BANK_NUMBER...) are not asked
for; ours it has no default recognizer for (SECRET, and the Canadian ones, which exist but are
not in the default English registry) count as not detected."""
MIN_SCORE = 0.35
"""Presidio's pattern scores start at 0.01-0.05 for weak shapes (any nine digits as US_SSN);
0.35 keeps what its recognizers consider likely, the threshold commonly used with it."""


class PresidioDetector:
    """AnalyzerEngine with its default English recognizers over a blank spaCy pipeline."""

    def __init__(self) -> None:
        # Offline e-mails: EmailRecognizer validates the domain with the module-level
        # tldextract.extract, which calls tldextract.tldextract.TLD_EXTRACTOR; built at import,
        # that one fetches the Public Suffix List from publicsuffix.org on first use (and can hang
        # behind a firewall that drops packets). Replacing it with an extractor that has no URL
        # and no cache directory makes it use the snapshot bundled in the wheel, without network
        # and without writing ~/.cache. (TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="" would do the same,
        # but only if set before tldextract is first imported.)
        tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(
            cache_dir=None, suffix_list_urls=()
        )
        # The engine would load (and download) en_core_web_lg; handing it a loaded blank pipeline
        # skips SpacyNlpEngine.load().
        nlp_engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank"}])
        nlp_engine.nlp = {"en": spacy.blank("en")}
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
        self._analyzer: Any = AnalyzerEngine(
            registry=registry, nlp_engine=nlp_engine, supported_languages=["en"]
        )
        supported = set(self._analyzer.get_supported_entities(language="en"))
        self.entities = sorted(name for name in OUR_ENTITIES if name in supported)
        """The Presidio entities asked for: ours that it has a recognizer for."""

    def find(self, text: str) -> Sequence[tuple[int, int, str]]:
        """Presidio's results at MIN_SCORE or more, with our entity names, sorted."""
        results = self._analyzer.analyze(
            text=text, language="en", entities=self.entities, score_threshold=MIN_SCORE
        )
        return sorted(
            (int(result.start), int(result.end), OUR_ENTITIES[result.entity_type])
            for result in results
        )
