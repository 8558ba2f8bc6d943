"""The output-side net: on every request, whatever the detectors said, the model cannot spell a target's core terms.

A prompt the detectors miss ("the books about the boy wizard") still reaches an engine that must not write "Ron
Weasley". So every active target's core terms (its name and aliases, their initials and surname, and the entities
of its documents that the served model ties to it alone, the judge's profile) become forbidden token sequences in
every spelling, and each request carries the union.
The net only filters a token that would *continue* a sequence the output has started (after " Ron", the " We" of
" Weasley"): a request whose output never begins one of them decodes exactly as it would without the net, and
one-token terms are left to the flagged-request guards, since banning them outright would change every request.
Inside a word it filters only the token that would finish it: "Confucius" is stopped at its "ius", so "Confu"
may still become "Confucianism" and a neighbour keeps its answer; a word that starts a sequence's next word is
filtered as soon as the word before it is written (" Ron" then no " We"). A surname alone is no core term here: it
is shared by the target's family ("Donny Osmond" beside Marie), so the full name and its aliases are the net's, and
the surname stays with the guards of flagged requests.

The union is written to the artifact store (content-addressed, so every replica and every engine process reads the
same file) and requests carry its path; the logits processor compiles a path once (``guards.logits.core``). The
same table tells afterwards which targets' sequences an output started, i.e. where the net filtered candidates:
the response names them as ``<target id>:net``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from classifiers.forbidden_tokens import forbidden_sequences
from classifiers.terms import CommonWord, Term, target_terms
from guards.logits.net_table import NetTable
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord


def word_steps(sequence: Sequence[int], tokenizer) -> list[int]:
    """The positions the net filters: each later word's first token, and the sequence's last token."""
    last = len(sequence) - 1
    return [k for k in range(1, len(sequence)) if k == last or tokenizer.decode([sequence[k]])[:1].isspace()]


def build_net(record: TargetRecord, entities: Sequence[str], tokenizer, is_common: CommonWord,
              artifacts: ArtifactStore) -> str:
    terms = [*target_terms(record, is_common, surname=False), *(Term(e) for e in entities)]
    sequences = [s for s in forbidden_sequences(terms, tokenizer) if len(s) > 1]
    table = NetTable(target_ids=[record.id], sequences=[(0, s) for s in sequences],
                     steps=[word_steps(s, tokenizer) for s in sequences])
    return artifacts.put(table.model_dump_json().encode())


class OutputNet:
    """The replica's union of every active target's net, rebuilt when the registry changes."""

    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts
        self.path: str | None = None
        self._key: tuple[str, ...] = ()

    def rebuild(self, targets: list[TargetRecord]) -> None:
        owned = [(t.id, t.artifacts.net_sequences) for t in targets if t.artifacts.net_sequences is not None]
        key = tuple(f"{i}:{d}" for i, d in sorted(owned))
        if key == self._key:
            return
        ids: list[str] = []
        sequences: list[tuple[int, list[int]]] = []
        steps: list[list[int]] = []
        for target_id, digest in sorted(owned):
            own = NetTable.model_validate_json(self.artifacts.get(digest))
            sequences += [(len(ids), s) for _, s in own.sequences]
            steps += own.steps or [list(range(1, len(s))) for _, s in own.sequences]
            ids.append(target_id)
        if sequences:
            data = json.dumps({"target_ids": ids, "sequences": sequences, "steps": steps}).encode()
            self.path = str(self.artifacts.path(self.artifacts.put(data)))
        else:
            self.path = None
        self._key = key
