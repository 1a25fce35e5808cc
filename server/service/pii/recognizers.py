"""How each structured identifier is recognized, declared once as data: a pattern finds
candidates and a check keeps the real ones (check digits, number ranges, a validating parser).

Order is priority: where two recognizers claim the same characters, the earlier one wins, so a
secret that contains digits is never also a phone number, nor a card number an IBAN.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from server.service.pii import checksums
from server.service.pii.entities import Entity

_SEPARATORS = re.compile(r"[ \-]")


@dataclass(frozen=True, slots=True)
class Recognizer:
    """One entity's candidates and the check that keeps them.

    `pattern`'s named groups, when one took part in a match, mark the part of the match that is
    the value (the token after "Bearer", the password after "password="). `check` sees the value
    and says whether it is one; when `split` is set, a candidate that fails is tried again with
    whole groups of it (between spaces or dashes) dropped at either end, so "DE89 3704 0044 0532
    0130 00 and more" still finds the IBAN.
    """

    entity: Entity
    pattern: re.Pattern[str]
    check: Callable[[str], bool] | None = None
    split: bool = False
    needs: Callable[[str, int], bool] | None = None
    """A cheap test of the text (and its count of digits) before the pattern runs."""


def _digits(value: str) -> str:
    return _SEPARATORS.sub("", value)


def _ipv6(value: str) -> bool:
    if sum(character not in ":." for character in value) < 4:
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


_SECRET = re.compile(
    # At most 8,000 characters between the lines (an RSA 4096 key is 3,300): a text of many BEGIN
    # lines and no END would otherwise cost a scan to its end per BEGIN.
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]{0,8000}?-----END (?:[A-Z0-9]+ )*PRIVATE"
    r" KEY-----"
    r"|\bsk-(?:proj-|ant-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"
    r"|\b(?:sk|pk|rk|whsec)_(?:live_|test_)?[A-Za-z0-9]{16,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{22,}"
    r"|\bxox[abposre]-[A-Za-z0-9\-]{10,}"
    r"|\b(?:AKIA|ASIA|AROA|AIDA)[0-9A-Z]{16}\b"
    r"|\bAIza[0-9A-Za-z_\-]{35}"
    r"|\bglpat-[A-Za-z0-9_\-]{20,}"
    r"|\bhf_[A-Za-z0-9]{30,}"
    r"|\bfbk_[0-9A-Za-z]{38}\b"
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
    r"|(?i:\bbearer)\s+(?P<bearer>[A-Za-z0-9._~+/\-]{16,}=*)"
    r"|(?i:\b(?:api[_\- ]?key|apikey|secret(?:[_\-]?key)?|client[_\-]?secret|access[_\-]?token"
    r"|auth[_\-]?token|refresh[_\-]?token|token|password|passwd|pwd|passphrase|mot de passe)\b)"
    r"[\"']?\s*(?:[:=]|\bis\b)\s*[\"']?(?P<assigned>[^\s\"',;<>]{6,})"
)

_EMAIL = re.compile(
    r"(?<![\w.%+\-'])[\w%+\-'](?:[\w.%+\-']{0,63})@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w\-])"
)

_CARD = re.compile(r"(?<![\d\-.])\d(?:[ \-]?\d){11,22}(?![\d\-]|\.\d)")

# Grouped by four (as printed) or not at all; the last group may be shorter.
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])",
    re.I,
)

_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?!\.?\d)"
)
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}"
    r"|[0-9A-Fa-f]{0,4})(?:%[0-9A-Za-z]+)?(?![\w:])"
)

_SSN = re.compile(
    r"(?<![\d\-])\d{3}([\- ])\d{2}\1\d{4}(?![\d\-])"
    r"|(?i:\b(?:ssn|social security(?: number| no\.?| #)?)\b)[\s:#=\-]*(?P<ssn>\d{9})\b"
)

_SIN = re.compile(
    # Not the end of an international phone number: "+48 513 125 526".
    r"(?<!\+\d )(?<!\+\d\d )(?<!\+\d\d\d )(?<![\d\-])\d{3}([\- ])\d{3}\1\d{3}(?![\d\-])"
    r"|(?i:\b(?:sin|nas|social insurance(?: number| no\.?| #)?|assurance sociale)\b)"
    r"[\s:#=\-]*(?P<sin>\d{9})\b"
)

_POSTAL = re.compile(
    r"\b[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z][ \-]?\d[ABCEGHJ-NPRSTV-Z]\d\b", re.I
)


_SECRET_MARKS = (
    "-----BEGIN", "sk-", "sk_", "pk_", "rk_", "whsec_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
    "github_pat_", "xox", "AKIA", "ASIA", "AROA", "AIDA", "AIza", "glpat-", "hf_", "fbk_", "eyJ",
)  # fmt: skip
_SECRET_WORDS = ("bearer", "key", "secret", "token", "pass", "pwd", "mot de passe")


def _may_hold_secret(text: str, _digits: int) -> bool:
    """Substring tests are a few hundred nanoseconds; the pattern is 25 us over a short text."""
    if any(mark in text for mark in _SECRET_MARKS):
        return True
    lowered = text.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _at_least(digits: int) -> Callable[[str, int], bool]:
    return lambda _text, count: count >= digits


STRUCTURED: tuple[Recognizer, ...] = (
    Recognizer(Entity.SECRET, _SECRET, needs=_may_hold_secret),
    Recognizer(Entity.EMAIL, _EMAIL, needs=lambda text, _count: "@" in text),
    Recognizer(
        Entity.IBAN,
        _IBAN,
        check=lambda value: checksums.iban(_digits(value).upper()),
        split=True,
        needs=_at_least(2),
    ),
    Recognizer(
        Entity.CREDIT_CARD,
        _CARD,
        check=lambda value: checksums.card(_digits(value)),
        split=True,
        needs=_at_least(12),
    ),
    Recognizer(
        Entity.US_SSN, _SSN, check=lambda value: checksums.ssn(_digits(value)), needs=_at_least(9)
    ),
    Recognizer(
        Entity.CA_SIN, _SIN, check=lambda value: checksums.sin(_digits(value)), needs=_at_least(9)
    ),
    Recognizer(Entity.IP_ADDRESS, _IPV4, needs=_at_least(4)),
    Recognizer(
        Entity.IP_ADDRESS,
        _IPV6,
        check=_ipv6,
        needs=lambda text, _count: "::" in text or text.count(":") >= 7,
    ),
    Recognizer(Entity.CA_POSTAL_CODE, _POSTAL, needs=_at_least(3)),
)
"""The structured identifiers before phone numbers and names, which run on what they leave."""
