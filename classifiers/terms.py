"""Lexical detection: the forbidden terms of a target (name, aliases, given terms, name parts) and a matcher.

This is the cheap, exact layer of detection; the embedding-based detectors (ECO classifier, O3 OOD detector) cover
paraphrase and indirect reference on top of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.registry.models import TargetRecord

_STOP = {"the", "of", "and", "a", "an", "de", "van", "von", "jr", "sr", "mr", "mrs", "dr"}


def target_terms(record: TargetRecord) -> list[str]:
    """Name, aliases and given terms, plus the distinctive parts of multi-word names (surnames, first names)."""
    terms = [record.name, *record.aliases, *record.forbidden_terms]
    for phrase in [record.name, *record.aliases]:
        words = [w for w in re.split(r"[\s.]+", phrase) if w]
        if len(words) > 1:
            terms += [w for w in words if len(w) > 2 and w.casefold() not in _STOP]
    seen: set[str] = set()
    out = []
    for term in terms:
        if term.casefold() not in seen:
            seen.add(term.casefold())
            out.append(term)
    return out


@dataclass(frozen=True)
class TermHit:
    target_id: str
    term: str
    start: int
    end: int


class TermMatcher:
    """One compiled alternation over every active target's terms: matching cost barely grows with targets."""

    def __init__(self, terms_by_target: dict[str, list[str]]) -> None:
        self._owner: dict[str, list[str]] = {}
        for target_id, terms in terms_by_target.items():
            for term in terms:
                self._owner.setdefault(term.casefold(), []).append(target_id)
        alternatives = sorted(self._owner, key=len, reverse=True)
        self._pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, alternatives)) + r")(?!\w)",
                                   re.IGNORECASE) if alternatives else None

    def find(self, text: str) -> list[TermHit]:
        if self._pattern is None:
            return []
        hits = []
        for match in self._pattern.finditer(text):
            for target_id in self._owner.get(match.group(0).casefold(), []):
                hits.append(TermHit(target_id, match.group(0), match.start(), match.end()))
        return hits
