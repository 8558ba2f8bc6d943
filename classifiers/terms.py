"""Lexical detection: a target's terms and a matcher whose cost does not grow with the number of targets.

Terms are the name and aliases (each comma-separated part of them too: "Prince Harry, Duke of Sussex"), the given
forbidden terms, and one distinctive single word per name: the surname ("Rockefeller", "da Vinci") or, after a
title, the given name ("Prince Harry" -> "Harry"). Single words are matched case-sensitively and only when they
are not common words, because "king", "white" or "John" alone say nothing about Stephen King, Vanna White or
John D. Rockefeller. A two-word name also matches with up to two capitalised middle names in between ("Stephen
Edwin King"). Matching runs on word n-grams through one dictionary, so a prompt costs the same with 1 or
10,000 targets registered.

Case-insensitive terms are matched on a folded copy of the prompt (``fold``: lower case, diacritics dropped,
leetspeak digits and symbols read as letters inside words: "H4rry", "Beyonce" for "Beyoncé"), and also with their
words joined or spelled out ("HarryPotter", "harry-potter", "H a r r y  P o t t e r"). A multi-word name's initials
("HP") are a term too, matched in capitals only.
"""

from __future__ import annotations

import re
import unicodedata
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


_LEET = str.maketrans("4@3105$7", "aaeiosst")
# letters and the leetspeak stand-ins of a word: "H4rry", "$tephen", "P0tt3r"
_LEET_RUN = re.compile(r"[^\W_]*[A-Za-z][^\W_]*(?:[4@3105$7][^\W_]*)+|[4@3105$7][^\W_]*[A-Za-z][\w@$]*")


def _fold_char(c: str) -> str:
    base = unicodedata.normalize("NFKD", c)[:1] or c
    low = base.lower()
    return low if len(low) == 1 else base


def fold(text: str) -> str:
    """Lower case, no diacritics, leetspeak read as letters: one character for each, so spans stay the original's."""
    folded = "".join(_fold_char(c) for c in text)
    return _LEET_RUN.sub(lambda m: m.group(0).translate(_LEET), folded)


def squash(text: str) -> str:
    """The folded letters and digits alone: how a term reads when its words are joined or spelled out."""
    return "".join(c for c in fold(text) if c.isalnum())


# joined or spelled-out forms shorter than this would match ordinary words glued together
MIN_SQUASHED = 6


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


def name_parts(phrase: str, is_common: CommonWord) -> list[str]:
    """The words of a multi-word proper name that name it alone ("Hermione", "Granger" of "Hermione Granger"):
    capitalised, three letters or more, no title, particle or common word. A fact forbidden as a whole name would
    otherwise come out by half ("Hermione represents ...")."""
    tokens = [w for w, _, _ in words(phrase)]
    if len(tokens) < 2:
        return []
    return [w for w in tokens if len(w) >= 3 and w[0].isupper() and not is_common(w)
            and w.casefold() not in _TITLES | _PARTICLES | _STOP | _SUFFIXES]


_QUOTED = re.compile(r"[\"“”]([^\"“”]{3,60})[\"“”]")


def description_terms(description: str, name: str) -> list[str]:
    """Quoted epithets in the operator's description ("King of Horror").

    Other names in a description are usually *related* entities (a parent, a company, a work), which are exactly what
    must stay answerable, so they are not taken as terms of the target.
    """
    quoted = (m.group(1).strip() for m in _QUOTED.finditer(description))
    return [q for q in quoted if q.casefold() != name.casefold()]


def initials(phrase: str) -> str | None:
    """"Harry Potter" -> "HP": a name of two to four capitalised words (titles and particles left out)."""
    core = [w for w, _, _ in words(phrase) if w.casefold() not in _TITLES | _SUFFIXES | _STOP | _PARTICLES]
    if not 2 <= len(core) <= 4 or not all(w[:1].isupper() and w[:1].isalpha() for w in core):
        return None
    return "".join(w[0] for w in core)


def target_terms(record: TargetRecord, is_common: CommonWord = lambda w: False, surname: bool = True) -> list[Term]:
    """Names, aliases, the parts of comma names, forbidden terms, the description's names, initials and, unless
    ``surname`` is off, the distinctive word of each name (the surname, or the name after a title)."""
    phrases: list[str] = []
    for phrase in [record.name, *record.aliases]:
        phrases.append(phrase)
        if "," in phrase:
            phrases += [p.strip() for p in phrase.split(",") if p.strip()]
    terms = [Term(p) for p in phrases] + [Term(t) for t in record.forbidden_terms]
    terms += [Term(t) for t in description_terms(record.description, record.name)]
    for phrase in phrases:
        word = _distinctive_word(phrase, is_common) if surname else None
        if word is not None:
            terms.append(Term(word, case_sensitive=" " not in word))
        letters = initials(phrase)
        if letters is not None:
            terms.append(Term(letters, case_sensitive=True))
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
        # folded word tuple -> [(target id, exact words or None when case-insensitive)]
        self.table: dict[tuple[str, ...], list[tuple[str, tuple[str, ...] | None]]] = {}
        # (first, last) of two-word names -> target ids: the name with middle names in between
        self.gapped: dict[tuple[str, str], list[str]] = {}
        # squashed case-insensitive terms -> target ids: the term joined or spelled out
        self.squashed: dict[str, list[str]] = {}
        self.max_words = 0
        self.max_squashed = 0
        for target_id, terms in terms_by_target.items():
            for term in terms:
                exact = tuple(w for w, _, _ in words(term.text))
                key = tuple(fold(w) for w in exact)
                self.table.setdefault(key, []).append((target_id, exact if term.case_sensitive else None))
                self.max_words = max(self.max_words, len(key))
                if len(key) == 2 and not term.case_sensitive:
                    self.gapped.setdefault((key[0], key[1]), []).append(target_id)
                joined = squash(term.text)
                if not term.case_sensitive and len(joined) >= MIN_SQUASHED:
                    self.squashed.setdefault(joined, []).append(target_id)
                    self.max_squashed = max(self.max_squashed, len(joined))

    def find(self, text: str) -> list[TermHit]:
        if not self.table:
            return []
        toks = words(text)
        folded_text = fold(text)
        folded = [folded_text[s:e] for _, s, e in toks]
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
            hits += self._squashed(text, toks, folded, i)
        return hits

    def _squashed(self, text: str, toks: list[tuple[str, int, int]], folded: list[str], i: int) -> list[TermHit]:
        """A term written as one word ("HarryPotter", "harry_potter") or letter by letter ("H a r r y")."""
        if not self.squashed:
            return []
        joined = ""
        single = 0
        for j in range(i, len(toks)):
            joined += "".join(c for c in folded[j] if c.isalnum())
            single += len(folded[j]) == 1
            if len(joined) > self.max_squashed:
                return []
            ids = self.squashed.get(joined)
            # one word, or mostly single letters: ordinary words that happen to glue into a term do not count
            if ids and ((j == i and (folded[i],) not in self.table) or (j > i and 2 * single >= j - i + 1)):
                start, end = toks[i][1], toks[j][2]
                return [TermHit(t, text[start:end], start, end) for t in ids]
        return []

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
