"""The PII scorer's arithmetic, its verdicts, and the CLI on stand-in detectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import pii_eval
from bench.pii_cases import CA_SIN, EMAIL, PERSON, PHONE_NUMBER, Case, Span
from bench.pii_report import passed
from bench.pii_score import EntityScore, Prediction, predictions, score

TEXT = "Mail ann@example.com or call 415-555-2671, SIN 046 454 286."
CASE = Case(
    TEXT,
    (
        Span(5, 20, EMAIL),
        Span(29, 41, PHONE_NUMBER),
        Span(47, 58, CA_SIN),
    ),
)


def test_one_hit_one_false_one_miss() -> None:
    found = [
        Prediction(5, 20, EMAIL),  # the e-mail: a hit with exact boundaries
        Prediction(29, 41, CA_SIN),  # the phone number under the wrong entity: false, and a miss
        Prediction(47, 58, CA_SIN),  # the SIN: a hit
    ]
    result = score([CASE], [found])

    sin = result.entity(CA_SIN)
    assert (sin.gold, sin.predicted, sin.true_positives) == (1, 2, 1)
    assert (sin.precision, sin.recall) == (0.5, 1.0)
    assert sin.f1 == pytest.approx(2 / 3)
    phone = result.entity(PHONE_NUMBER)
    assert (phone.gold, phone.predicted, phone.precision, phone.recall) == (1, 0, None, 0.0)
    overall = result.overall([EMAIL, PHONE_NUMBER, CA_SIN])
    # 3 gold, 3 predicted, 2 hits: precision = recall = 2/3.
    assert (overall.precision, overall.recall) == (2 / 3, 2 / 3)
    assert result.false[CA_SIN][0].note == f"on gold {PHONE_NUMBER}"
    assert result.missed[PHONE_NUMBER][0].note == f"predicted {CA_SIN}"


def test_tiny_case_by_hand() -> None:
    # One TP (the e-mail), one FP (an e-mail on "call"), one FN (the phone number, not found).
    case = Case(TEXT, CASE.spans[:2])
    found = [Prediction(5, 20, EMAIL), Prediction(24, 28, EMAIL)]
    result = score([case], [found])
    overall = result.overall([EMAIL, PHONE_NUMBER])
    assert (overall.true_positives, overall.predicted, overall.gold) == (1, 2, 2)
    assert (overall.precision, overall.recall, overall.f1) == (0.5, 0.5, 0.5)
    assert result.entity(EMAIL).exact_rate == 1.0


def test_overlap_is_a_hit_and_each_gold_is_matched_once() -> None:
    found = [Prediction(29, 32, PHONE_NUMBER), Prediction(33, 41, PHONE_NUMBER)]
    result = score([CASE], [found])
    phone = result.entity(PHONE_NUMBER)
    assert (phone.true_positives, phone.predicted, phone.exact) == (1, 2, 0)
    assert result.inexact[PHONE_NUMBER][0].start == 29


def test_enum_entities_become_strings() -> None:
    from enum import StrEnum

    class Entity(StrEnum):
        EMAIL = "EMAIL"

    assert predictions([(5, 20, Entity.EMAIL)]) == [Prediction(5, 20, "EMAIL")]


def test_targets() -> None:
    assert passed(EntityScore(gold=100, predicted=100, true_positives=98))
    assert not passed(EntityScore(gold=100, predicted=100, true_positives=97))
    assert not passed(EntityScore(gold=100, predicted=104, true_positives=98))  # precision 0.94
    assert passed(EntityScore())
    assert not passed(EntityScore(gold=0, predicted=1))


def test_cli_passes_on_the_oracle_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.bench.pii_fakes import ORACLE_COUNT, ORACLE_SEED

    output = tmp_path / "pii.json"
    arguments = ["--count", str(ORACLE_COUNT), "--seed", str(ORACLE_SEED), "--json", str(output)]
    status = pii_eval.main([*arguments, "--detector", "tests.bench.pii_fakes:OracleDetector"])

    printed = capsys.readouterr().out
    assert status == 0
    assert "PASS: every targeted entity meets its targets" in printed
    report = json.loads(output.read_text())
    assert report["passed"] is True
    assert report["entities"][EMAIL]["recall"] == 1.0
    assert report["entities"][PERSON]["exact_rate"] == 1.0
    assert "passed" not in report["entities"][PERSON]


def test_cli_fails_when_targets_are_missed(capsys: pytest.CaptureFixture[str]) -> None:
    status = pii_eval.main(["--count", "200", "--detector", "tests.bench.pii_fakes:BlindDetector"])
    printed = capsys.readouterr().out
    assert status == 1
    assert "FAIL: EMAIL, CREDIT_CARD, IBAN, IP_ADDRESS, US_SSN, CA_SIN, PHONE_NUMBER" in printed
    assert "EMAIL missed:" in printed
    pii_eval.main(
        ["--count", "200", "--detector", "tests.bench.pii_fakes:BlindDetector", "--quiet"]
    )
    assert "missed:" not in capsys.readouterr().out


def test_cli_without_the_detector_module(capsys: pytest.CaptureFixture[str]) -> None:
    assert pii_eval.main(["--count", "10", "--detector", "no_such_module:Detector"]) == 2
    assert "cannot import no_such_module:Detector" in capsys.readouterr().err
