"""People's names, found without a language model: no NER model ships in a PyPI wheel (spaCy's
are downloaded from GitHub), so names come from a gazetteer and the shape of the text.

The gazetteer is Faker's first and last names for the locales below (MIT, inside its wheel,
read once). A name is taken when
- a title comes first ("Dr. Ada Lovelace", "Mme Dupont"), or
- a known first name is followed by a capitalized surname or an initial ("Ada Lovelace",
  "John Q. Public"), or
- a cue introduces it ("my name is Ada", "signed, Ada", "ask for Ada Smith"), or
- a known first name that is not also a common word stands alone ("Priya fixed it").
Words that are names of assistants and products ("Claude", "Gemini") or ordinary words that are
also first names ("May", "Will", "Grace") are a name only with a title, a surname or a cue.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from functools import cache


def _words(text: str) -> list[str]:
    return text.split()


LOCALES = (
    "en_US", "en_GB", "en_IE", "en_IN", "fr_FR", "fr_CA", "de_DE", "es_ES", "es_MX", "it_IT",
    "pt_BR", "pt_PT", "nl_NL", "pl_PL", "sv_SE", "da_DK", "no_NO", "fi_FI", "tr_TR", "ru_RU",
    "zh_CN", "ja_JP", "ko_KR", "vi_VN", "ar_AA", "hi_IN", "id_ID", "fil_PH", "uk_UA", "cs_CZ",
)  # fmt: skip

NOT_PEOPLE = frozenset(
    _words(
        """
        Claude Gemini Siri Alexa Cortana Copilot Bard Llama Mistral Grok Jasper Watson Ada Jarvis
        Mercedes Porsche Tesla Chase Wells Fargo Amazon Apple Jordan Nike Dell Ford Florence Paris
        Sydney Victoria Austin Dallas Houston Phoenix Georgia Virginia Carolina Brooklyn Chelsea
        """
    )
)
"""First names that are more often an assistant, a product, a brand or a place."""

COMMON_WORDS = frozenset(
    _words(
        """
        May Will Grace Hope Faith Joy Rose Lily Mark Bill Pat Sue Jack Art Dawn Summer Autumn April
        June August Iris Ruby Amber Jade Destiny Chance Sunny Rich Frank Gene Guy Ray Rob Victor Max
        Bob Bud Buck Carol Chip Cliff Crystal Dale Dean Derby Dot Drew Earl Ernest Fern Gay Gale
        Glen Hazel Heath Herb Holly Honor Hunter Ivy Jay Jewel Joy King Lane Lee Lincoln Major Mason
        Miles Misty Nick Norm Olive Pearl Penny Petra Price Reed Rex Robin Rocky Royal Sage Scott
        Skip Sky Sterling Storm Tad Terry Tim Trinity True Ty Van Wade Ward Willow Wren Young Ace
        Bishop Blake Brook Cash Clay Cole Cruz Dash Deacon Duke Ellis Emerald Eve Genesis Gray
        Harmony Harper Haven Heaven Honey Journey Justice Kit Legend Liberty Lucky Marina Melody
        Mercy Noble Nova Ocean Paris Patience Poppy Precious Prince Queen Rain Raven River Rowan
        Saint Shadow Sierra Silver Star Tiger Unique Valentine Vienna Violet Angel Christian Don
        Ernesto Jean Kai Marcel Patch Pierre Lou Louis Ma Le Van Mac Mo Ben Dan Ian Sam Ed Al Tom Bo
        Di Jo Ty Ali Ana
        """
    )
)
"""First names that are also ordinary words (or too short to tell): a name only with more."""

TITLES = frozenset(
    _words(
        """
        Mr Mrs Ms Mx Miss Dr Prof Sir Dame Mme Mlle Herr Frau Sr Sra Srta Sig Dott Dra
        """
    )
)
CUES = (
    "my name is", "my name's", "name:", "name is", "i am", "i'm", "this is", "call me",
    "ask for", "asked for", "thanks to", "thanks", "thank you", "talked to", "spoke to",
    "spoke with", "speak to", "contact", "signed", "regards", "cheers", "sincerely", "best",
    "from", "agent", "je m'appelle", "je suis", "merci à", "ich bin", "ich heiße", "me llamo",
    "mi chiamo",
)  # fmt: skip
"""Words after which a capitalized word is a name (compared in lower case, before the word)."""

_UPPER = "A-ZÀ-ÖØ-ÞĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮİĲĴĶĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽ"
PARTICLES = frozenset(
    _words("van von de der den del della da di du dos das le la ten ter bin ibn al el st")
)
"""Lower-case words inside a surname ("Jim van Mare", "Tom de Jode")."""
_RUN = re.compile(
    rf"[{_UPPER}][\w'\-]*\.?(?:[ \t]+(?:(?:{'|'.join(PARTICLES)})[ \t]+)*[{_UPPER}][\w'\-]*\.?)*"
)
"""Capitalized words in a row ("Dr. Ada Lovelace", "Thanks John Q. Smith")."""
_CUE_END = re.compile(r"(?:{})[,:]?\s+$".format("|".join(re.escape(cue) for cue in CUES)))
NOT_SURNAMES = frozenset(
    _words(
        """
        I The A An And Or But If So Then Thanks Thank Please Hi Hello Hey Dear Monday Tuesday
        Wednesday Thursday Friday Saturday Sunday January February March April May June July August
        September October November December Street St Avenue Ave Road Rd Inc Ltd LLC Corp Team
        Support Bot Chat Chatbot Assistant AI App API Is Was Are It He She We They You My Your Our
        Their
        """
    )
)
"""Capitalized words after a first name that do not make it a full name."""


@cache
def gazetteer() -> tuple[frozenset[str], frozenset[str]]:
    """Faker's first names and last names over LOCALES, read once (about 0.3 s)."""
    firsts: set[str] = set()
    lasts: set[str] = set()
    for locale in LOCALES:
        try:
            module = importlib.import_module(f"faker.providers.person.{locale}")
        except ImportError:
            continue
        provider = module.Provider
        for attribute in ("first_names", "first_names_male", "first_names_female"):
            firsts.update(_latin(getattr(provider, attribute, ())))
        lasts.update(_latin(getattr(provider, "last_names", ())))
    return frozenset(firsts), frozenset(lasts)


def _latin(names: object) -> Iterator[str]:
    for name in names:  # type: ignore[attr-defined]
        if isinstance(name, str) and len(name) > 1 and name[0].isupper() and " " not in name:
            yield name


def find_names(text: str) -> Iterator[tuple[int, int]]:
    """Spans of people's names in `text`."""
    firsts, lasts = gazetteer()
    for run in _RUN.finditer(text):
        words = [(m.start() + run.start(), m.group()) for m in _WORD.finditer(run.group())]
        cued = _CUE_END.search(text[max(0, run.start() - 24) : run.start()].lower()) is not None
        index = 0
        while index < len(words):
            start, word = words[index]
            bare = word.rstrip(".")
            if _is_title(word) and index + 1 < len(words):
                # A title names whoever follows: a name, or a surname alone ("Mme Dupont").
                first = index + 1
                last = max(first, _surname_end(words, first, lasts))
                yield words[first][0], _end(words[last])
                index = last + 1
                continue
            if (bare in NOT_SURNAMES and bare not in COMMON_WORDS) or bare.islower():
                index += 1
                continue
            cue_here = cued if index == 0 else words[index - 1][1].lower().rstrip(",:") in CUES
            known = bare in firsts
            last = _surname_end(words, index, lasts)
            if (known or cue_here) and last > index:
                yield start, _end(words[last])
                index = last + 1
                continue
            if known and bare not in NOT_PEOPLE and (cue_here or bare not in COMMON_WORDS):
                yield start, start + len(bare)
            index += 1


_WORD = re.compile(r"\S+")
MAX_SURNAME_WORDS = 3


def _is_title(word: str) -> bool:
    """ "Dr", "Dr.", "Mme"; "M." only with its period (a lone M is an initial or a size)."""
    return word.rstrip(".") in TITLES or word == "M."


def _end(word: tuple[int, str]) -> int:
    start, text = word
    return start + len(text.rstrip(".,"))


def _surname_end(words: list[tuple[int, str]], index: int, lasts: frozenset[str]) -> int:
    """The index of the last word of a name whose first word is `index`: up to three more names
    with initials and particles between them ("Q.", "van", "de"); `index` itself when none
    follows."""
    following = index + 1
    last = index
    taken = 0
    while following < len(words) and taken < MAX_SURNAME_WORDS:
        word = words[following][1]
        if word.rstrip(".,") in PARTICLES or (len(word) == 2 and word[1] == "."):
            following += 1  # a particle or an initial, kept only with a surname after it
            continue
        word = word.rstrip(".,")
        if word in NOT_SURNAMES or not _surname(word, lasts):
            break
        last = following
        taken += 1
        following += 1
    return last


def _surname(word: str, lasts: frozenset[str]) -> bool:
    """A capitalized word after a first name: a known last name, or any word that looks like one
    (capital then lower case), since surnames are too many to list."""
    return word in lasts or (len(word) > 1 and word[0].isupper() and word[1:].islower())
