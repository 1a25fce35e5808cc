"""Stand-ins for the detector until server.service.pii lands, loaded as module:factory."""

from __future__ import annotations

from bench.pii_cases import generate

ORACLE_COUNT = 200
ORACLE_SEED = 11


class OracleDetector:
    """Finds exactly the gold spans of generate(ORACLE_COUNT, ORACLE_SEED): every target met."""

    def __init__(self) -> None:
        self._gold = {case.text: case.spans for case in generate(ORACLE_COUNT, ORACLE_SEED)}

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """The gold spans of `text`, none for a text it was not built from."""
        return [tuple(span) for span in self._gold.get(text, ())]  # type: ignore[misc]


class BlindDetector:
    """Finds nothing: every recall target missed."""

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """No spans."""
        return []
