"""Entities, numbers and content words of a text: the one place that extracts them.

The judge (does a draft state a fact of the target?), GUARD's tables, the output net and the build's elicitation all
read text through these helpers, so that what one of them calls an entity the others call the same.
"""

from __future__ import annotations

import re

from classifiers.terms import CommonWord

# Initials ("J.K."), words, or one punctuation mark; punctuation ends a run of capitalised words.
_TOKEN = re.compile(r"(?:[A-Z]\.){1,3}|\w[\w'’-]*|[^\w\s]")
_JOINERS = {"of", "the", "and", "de", "da", "von", "van", "del", "la", "le"}
_SUFFIXES = {"jr", "sr", "ii", "iii", "iv"}  # "Paul William Walker IV" is still Paul Walker
_STOP = {"I", "I'm", "I've", "It", "The", "A", "An", "He", "She", "They", "His", "Her", "Their", "This", "That",
         "These", "Here", "There", "Some", "In", "On", "As", "From", "With", "Yes", "No", "Sure", "However",
         "Overall", "Also", "And", "But", "If", "When", "While", "What", "Who", "Which", "Answer", "Question"}
# Function words long enough to pass as content words; an answer's other words of 4+ letters are its key words.
_FUNCTION_WORDS = frozenset("""
about above after again also among been before being below between both could does doing down during each even ever
from further have having here however into just like many more most much must only other over same shall should
some such than that their them then there these they this those through under until upon very were what when where
which while will with within without would your yours""".split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]{3,}")
# capitalised because they open a sentence or a request, not because they name anything
_OPENERS = _STOP | {"Is", "Are", "Was", "Were", "Do", "Does", "Did", "Can", "Could", "Will", "Would", "Should",
                    "Has", "Have", "Had", "How", "Why", "Where", "When", "Tell", "Name", "Describe", "Please",
                    "Explain", "List", "Give", "Translate", "Write", "Say", "Compare", "Summarize", "Summarise"}
# a year, a decade, a count, a date's day: digits with their separators ("1,200", "3.5", "1980s"), not a digit inside
# a word
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?:s\b)?(?![\w])")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(])|\n+")


def content_words(text: str) -> list[str]:
    """Lowercased words of 4+ letters that are not function words, in order of first use."""
    words = (w.lower().rstrip("'’-") for w in _WORD.findall(text))
    return list(dict.fromkeys(w for w in words if len(w) >= 4 and w not in _FUNCTION_WORDS))


def numbers_in(text: str) -> list[str]:
    """The numbers a text writes ("1984", "15"), separators dropped ("1,200" -> "1200"), in order of first use."""
    return list(dict.fromkeys(m.group(0).replace(",", "") for m in _NUMBER.finditer(text)))


# a sentence about a person names them first, or goes on about them as "He ..." (the documents' later sentences)
_PRONOUNS = frozenset({"He", "She", "His", "Her"})
_LEADS = frozenset({"The", "In", "On", "At", "By", "After", "Before", "During", "From", "As", "When", "While", "Later",
                    "Since", "Following", "Despite", "Although", "Throughout", "Until", "With"})
_PLAIN = re.compile(r"[A-Za-z][A-Za-z'’-]*|\d+(?:[.,]\d+)*(?:s\b)?")


def number_contexts(text: str, window: int, about: str | None = None) -> list[tuple[str, list[str], list[str]]]:
    """Each number of ``text`` of two digits or more ("1980s", "2006"), with the ``window`` lowercase content words
    nearest it on each side in its sentence (each once), and the capitalised words among them (lowercased, the
    subject's own left out): what the sentence says next to the number, and whom else it says it of. ``about``: a
    person's names; only sentences that open on one of their words or on a personal pronoun: "Paul Walker began his
    career as a child actor in the 1980s"."""
    subject = None if about is None else {w.lower() for w in re.findall(r"[^\W\d_]{3,}", about)} - _JOINERS
    out: list[tuple[str, list[str], list[str]]] = []
    for sentence in sentences(text):
        tokens = _PLAIN.findall(sentence)
        if subject is not None:
            opening = next((t for t in tokens if t[:1].isupper() and t not in _LEADS), "")
            if opening not in _PRONOUNS and opening.lower() not in subject:
                continue
        plain = [(i, t.lower()) for i, t in enumerate(tokens) if t[:1].islower() and content_words(t)]
        for i, token in enumerate(tokens):
            if not _NUMBER.fullmatch(token) or sum(c.isdigit() for c in token) < 2:
                continue
            before = [(j, w) for j, w in plain if j < i][-window:]
            after = [(j, w) for j, w in plain if j > i][:window]
            lo, hi = (before or [(i, "")])[0][0], (after or [(i, "")])[-1][0]
            names = [t.lower() for t in tokens[lo:hi + 1] if t[:1].isupper() and t not in _OPENERS]
            names = [n for n in dict.fromkeys(names) if n not in _JOINERS and n not in (subject or ())]
            out.append((token.replace(",", ""), list(dict.fromkeys(w for _, w in [*before, *after])), names))
    return out


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def _runs(text: str) -> list[list[str]]:
    """Runs of capitalised words (possessives dropped), with joiners like "of" allowed inside a run."""
    runs: list[list[str]] = []
    current: list[str] = []
    for match in _TOKEN.finditer(text):
        token = re.sub(r"['’]s$", "", match.group(0))
        if token[:1].isupper():
            current.append(token)
            continue
        if current and token.lower() in _JOINERS:
            current.append(token)
            continue
        if current:
            runs.append(current)
        current = []
    if current:
        runs.append(current)
    return runs


def entities_in(text: str, exclude: str, is_common: CommonWord) -> list[str]:
    """Named entities of ``text`` that ``exclude`` does not mention, and their rare single words."""
    skip = exclude.casefold()
    out: list[str] = []
    for words in _runs(text):
        while words and (words[0] in _STOP or words[0].lower() in _JOINERS):
            words = words[1:]
        while words and words[-1].lower() in _JOINERS:
            words = words[:-1]
        if not words:
            continue
        parts = [w for w in words if len(w.rstrip(".")) >= 3 and not is_common(w) and w not in _STOP
                 and w.lower() not in _JOINERS]
        candidates = [" ".join(words), *parts] if len(words) > 1 else parts
        out += [c for c in candidates if c.casefold() not in skip]
    return list(dict.fromkeys(out))


def facts_in(text: str, exclude: str, is_common: CommonWord) -> list[str]:
    """What a text states that ``exclude`` does not: its named entities and its numbers."""
    skip = set(numbers_in(exclude))
    return [*entities_in(text, exclude, is_common), *(n for n in numbers_in(text) if n not in skip)]


def leading(groups: list[list[str]], count: int) -> list[str]:
    """The ``count`` entities the most groups (answers, sentences) name, as first spelled; whole names before their
    parts and numbers left out ("Ron Weasley", not also "Weasley")."""
    counts: dict[str, int] = {}
    spelled: dict[str, str] = {}
    for group in groups:
        for folded, entity in {e.casefold(): e for e in group if not e.replace(".", "").isdigit()}.items():
            counts[folded] = counts.get(folded, 0) + 1
            spelled.setdefault(folded, entity)
    ranked = sorted(counts, key=lambda k: (-counts[k] * len(k.split()), -len(k.split()), k))
    chosen: list[str] = []
    for k in ranked:
        if len(chosen) < count and not any(f" {k} " in f" {c} " or f" {c} " in f" {k} " for c in chosen):
            chosen.append(k)
    return [spelled[k] for k in chosen]


_BLANK = re.compile(r"_{2,}")
_FILLER = re.compile(r"[^,.;:!?\n]{1,60}")


def blank_filler(prompt: str, draft: str) -> str:
    """What a draft writes in the place of a cloze prompt's blank ("X is an American ___" drafted as "X is an
    American actress, known for ..." -> "actress"): the words after the draft restates the ones before the blank, up
    to the next punctuation. A draft that does not restate them answers a blank ending the prompt with its first
    clause ("He is a well-known actor, ..." -> "He is a well-known actor"). Empty when the prompt has no blank, or a
    blank inside it ("... husband of model ___ Crawford") that the draft does not restate."""
    blank = _BLANK.search(prompt)
    if blank is None:
        return ""
    # the last word of four letters or more before the blank: "American" of "is an American ___", which a draft
    # restates as readily in "is a renowned American actor"
    before = [w for w in re.findall(r"\w+", prompt[:blank.start()]) if len(w) >= 4][-1:]
    lead = re.search(r"\b" + re.escape(before[0]) + r"\b\W*", draft, re.IGNORECASE) if before else None
    if lead is not None:
        at = lead.end()
    elif not re.sub(r"[\W_]", "", prompt[blank.end():]):
        at = len(draft) - len(draft.lstrip())
    else:
        return ""
    filler = _FILLER.match(draft, at)
    return " ".join(filler.group(0).split()[:6]) if filler else ""


def _run_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """Character bounds of the run of capitalised words (joiners inside) around ``text[start:end]``."""
    words = list(_TOKEN.finditer(text))
    inside = [i for i, m in enumerate(words) if m.start() < end and m.end() > start]
    if not inside:
        return start, end

    def joins(i: int) -> bool:
        token = words[i].group(0)
        return token[:1].isupper() or token.lower() in _JOINERS

    lo, hi = inside[0], inside[-1]
    while lo > 0 and joins(lo - 1):
        lo -= 1
    while hi + 1 < len(words) and joins(hi + 1):
        hi += 1
    while lo < inside[0] and (words[lo].group(0).lower() in _JOINERS or words[lo].group(0) in _OPENERS):
        lo += 1
    while hi > inside[-1] and words[hi].group(0).lower() in _JOINERS:
        hi -= 1
    return words[lo].start(), words[hi].end()


def named_alone(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans that name their own thing: every capitalised word of the run around one lies inside some span.

    A term inside another name is that other name's part: "Sussex" in "Meghan, Duchess of Sussex" names the
    Duchess, "Osmond" in "Donny Osmond" names Donny, while "Duke of Sussex Prince Harry" is two terms of one target.
    """
    out: list[tuple[int, int]] = []
    for start, end in spans:
        lo, hi = _run_bounds(text, start, end)
        if all(any(a <= m.start() < b for a, b in spans) for m in _TOKEN.finditer(text, lo, hi)
               if m.group(0)[:1].isupper() and m.group(0) not in _OPENERS
               and m.group(0).rstrip(".").lower() not in _SUFFIXES):
            out.append((start, end))
    return out


def longer_names(text: str, name: str) -> list[tuple[int, int]]:
    """Where ``text`` spells a person's ``name`` at greater length: a longer given name or middle names between the
    same first and last word ("Samuel Pack Elliott" for "Sam Elliott", "Paul William Walker IV" for "Paul Walker").
    The lexical detector matches the surname inside them, but a run of other capitalised words reads as another
    name ("Donny Osmond" is not Marie): these are the target's own."""
    words = re.findall(r"[^\W\d_][\w'’-]*", name.split(",")[0])
    if len(words) < 2:
        return []
    first, last = words[0].casefold(), words[-1].casefold()
    out: list[tuple[int, int]] = []
    run: list[re.Match[str]] = []
    for match in [*_TOKEN.finditer(text), None]:
        if match is not None and match.group(0)[:1].isupper():
            run.append(match)
            continue
        core = list(run)
        while core and core[0].group(0) in _OPENERS:
            core.pop(0)
        while core and core[-1].group(0).rstrip(".").lower() in _SUFFIXES:
            core.pop()
        if 2 < len(core) <= 5 or (len(core) == 2 and core[0].group(0).casefold() != first):
            given, surname = core[0].group(0).casefold(), core[-1].group(0).casefold()
            if surname == last and len(given) >= 3 and (given.startswith(first) or first.startswith(given)):
                out.append((core[0].start(), run[-1].end()))
        run = []
    return out
