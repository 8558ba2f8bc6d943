"""Lexical detection: a target's terms and a matcher whose cost does not grow with the number of targets.

Terms are the name and aliases (each comma-separated part of them too: "Prince Harry, Duke of Sussex"), the given
forbidden terms, and one distinctive single word per name: the surname ("Rockefeller", "da Vinci") or, after a
title, the given name ("Prince Harry" -> "Harry"). Single words are matched case-sensitively and only when they
are not common words, because "king", "white" or "John" alone say nothing about Stephen King, Vanna White or
John D. Rockefeller. A two-word name also matches with up to two capitalised middle names in between ("Stephen
Edwin King"). Matching runs on word n-grams through one dictionary, so a prompt costs the same with 1 or
10,000 targets registered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from server.registry.models import TargetRecord

_WORD = re.compile(r"\w+(?:-\w+)*")
_TITLES = {"prince", "princess", "duke", "duchess", "king", "queen", "sir", "lord", "lady", "dame", "dr", "mr", "mrs",
           "ms", "saint", "st", "pope", "president", "emperor", "earl", "count", "countess", "baron", "general"}
_PARTICLES = {"da", "de", "di", "del", "della", "van", "von", "der", "den", "le", "la", "du", "bin", "al", "el"}
_STOP = {"of", "the", "and"}
_SUFFIXES = {"jr", "sr", "ii", "iii", "iv"}

CommonWord = Callable[[str], bool]


def words(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(text)]


@dataclass(frozen=True)
class Term:
    text: str
    case_sensitive: bool = False


def _distinctive_word(phrase: str, is_common: CommonWord) -> str | None:
    tokens = [w for w, _, _ in words(phrase)]
    had_title = bool(tokens) and tokens[0].casefold() in _TITLES
    core = [w for w in tokens if w.casefold() not in _TITLES | _SUFFIXES | _STOP]
    if len(core) < 2 and not (had_title and len(core) == 1):
        return None  # a one-word name is already a term; nothing shorter to add
    if had_title and len(core) == 1:
        candidate = core[0]
    else:
        # the surname, with its particles ("da Vinci", "van Gogh")
        start = len(core) - 1
        while start > 0 and core[start - 1].casefold() in _PARTICLES:
            start -= 1
        candidate = " ".join(core[start:])
    if len(candidate) < 3 or (" " not in candidate and is_common(candidate)):
        return None
    return candidate


_QUOTED = re.compile(r"[\"“”]([^\"“”]{3,60})[\"“”]")


def description_terms(description: str, name: str) -> list[str]:
    """Quoted epithets in the operator's description ("King of Horror").

    Other names in a description are usually *related* entities (a parent, a company, a work), which are exactly what
    must stay answerable, so they are not taken as terms of the target.
    """
    quoted = (m.group(1).strip() for m in _QUOTED.finditer(description))
    return [q for q in quoted if q.casefold() != name.casefold()]


def target_terms(record: TargetRecord, is_common: CommonWord = lambda w: False) -> list[Term]:
    phrases: list[str] = []
    for phrase in [record.name, *record.aliases]:
        phrases.append(phrase)
        if "," in phrase:
            phrases += [p.strip() for p in phrase.split(",") if p.strip()]
    terms = [Term(p) for p in phrases] + [Term(t) for t in record.forbidden_terms]
    terms += [Term(t) for t in description_terms(record.description, record.name)]
    for phrase in phrases:
        word = _distinctive_word(phrase, is_common)
        if word is not None:
            terms.append(Term(word, case_sensitive=" " not in word))
    seen: set[tuple[str, bool]] = set()
    out = []
    for term in terms:
        key = (term.text.casefold(), term.case_sensitive)
        if key not in seen and words(term.text):
            seen.add(key)
            out.append(term)
    return out


@dataclass(frozen=True)
class TermHit:
    target_id: str
    term: str
    start: int
    end: int


# Middle names a two-word name may carry in a prompt: "Stephen Edwin King", "Kanye Omari West".
MAX_MIDDLE_NAMES = 2


class TermMatcher:
    def __init__(self, terms_by_target: dict[str, list[Term]]) -> None:
        # casefolded word tuple -> [(target id, exact words or None when case-insensitive)]
        self.table: dict[tuple[str, ...], list[tuple[str, tuple[str, ...] | None]]] = {}
        # (first, last) of two-word names -> target ids: the name with middle names in between
        self.gapped: dict[tuple[str, str], list[str]] = {}
        self.max_words = 0
        for target_id, terms in terms_by_target.items():
            for term in terms:
                exact = tuple(w for w, _, _ in words(term.text))
                key = tuple(w.casefold() for w in exact)
                self.table.setdefault(key, []).append((target_id, exact if term.case_sensitive else None))
                self.max_words = max(self.max_words, len(key))
                if len(key) == 2 and not term.case_sensitive:
                    self.gapped.setdefault((key[0], key[1]), []).append(target_id)

    def find(self, text: str) -> list[TermHit]:
        if not self.table:
            return []
        toks = words(text)
        folded = [w.casefold() for w, _, _ in toks]
        hits = []
        for i in range(len(toks)):
            for n in range(1, min(self.max_words, len(toks) - i) + 1):
                entries = self.table.get(tuple(folded[i:i + n]))
                if not entries:
                    continue
                exact = tuple(w for w, _, _ in toks[i:i + n])
                start, end = toks[i][1], toks[i + n - 1][2]
                for target_id, want in entries:
                    if want is None or want == exact:
                        hits.append(TermHit(target_id, text[start:end], start, end))
            hits += self._with_middle_names(text, toks, folded, i)
        return hits

    def _with_middle_names(self, text: str, toks: list[tuple[str, int, int]], folded: list[str],
                           i: int) -> list[TermHit]:
        """A two-word name written with capitalised middle names between its words (the names capitalised too)."""
        if not self.gapped or not toks[i][0][:1].isupper():
            return []
        for gap in range(1, MAX_MIDDLE_NAMES + 1):
            j = i + gap + 1
            if j >= len(toks) or not toks[i + gap][0][:1].isupper():
                return []
            ids = self.gapped.get((folded[i], folded[j]))
            if ids and toks[j][0][:1].isupper():
                start, end = toks[i][1], toks[j][2]
                return [TermHit(t, text[start:end], start, end) for t in ids]
        return []
