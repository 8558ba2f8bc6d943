"""Readers for benchmark folders laid out like ``shared/data`` (RWKU targets, MMLU), so any split works."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

FORGET_LEVELS = ("l1", "l2", "l3")
NEIGHBOR_LEVELS = ("l1", "l2")
# What an evaluation registers a target with: its name alone, plus RWKU's intro as the description, or plus its
# Wikipedia paragraphs (passages.json) or RWKU's model-written forget corpus (forget_corpus.json) as documents.
RegisterWith = Literal["name", "intro", "passages", "corpus"]
REGISTER_WITH: tuple[RegisterWith, ...] = ("name", "intro", "passages", "corpus")


class Probe(BaseModel):
    query: str
    answer: str
    level: str
    kind: str = ""


class RWKUTarget(BaseModel):
    id: int
    name: str
    intro: str
    forget: dict[str, list[Probe]]
    neighbor: dict[str, list[Probe]]
    folder: Path

    def documents(self, kind: Literal["passages", "corpus"]) -> list[str]:
        path = self.folder / ("passages.json" if kind == "passages" else "forget_corpus.json")
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: this copy of RWKU has no {kind} for {self.name}")
        return [item["text"] if isinstance(item, dict) else str(item) for item in json.loads(path.read_text())]

    def registration(self, register_with: RegisterWith) -> dict[str, object]:
        """The admin API body's fields (without methods) for this target."""
        if register_with == "name":
            return {"name": self.name}
        if register_with == "intro":
            return {"name": self.name, "description": self.intro}
        return {"name": self.name, "documents": self.documents(register_with)}


def _probes(path: Path, level: str) -> list[Probe]:
    if not path.exists():
        return []
    return [Probe(query=p["query"], answer=str(p.get("answer", "")), level=level, kind=p.get("type", ""))
            for p in json.loads(path.read_text())]


def _number(folder: Path) -> int:
    """RWKU's target folders are named ``<n>_<name>``; a folder without a number sorts last."""
    found = re.match(r"\d+", folder.name)
    return int(found[0]) if found else 1 << 30


def load_rwku(data_dir: Path, limit: int | None = None) -> list[RWKUTarget]:
    root = data_dir / "rwku" / "Target"
    if not root.is_dir():
        raise FileNotFoundError(f"no RWKU targets under {root}")
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=_number)
    targets = []
    for folder in folders[:limit]:
        intro = json.loads((folder / "intro.json").read_text())[0]
        targets.append(RWKUTarget(
            id=int(folder.name.split("_", 1)[0]), name=intro["target"],
            intro=intro.get("intro", "").replace(f"Please forget {intro['target']}.", "").strip(),
            forget={lvl: _probes(folder / f"forget_level{lvl[1]}.json", lvl) for lvl in FORGET_LEVELS},
            neighbor={lvl: _probes(folder / f"neighbor_level{lvl[1]}.json", lvl) for lvl in NEIGHBOR_LEVELS},
            folder=folder))
    return targets


def load_other_names(data_dir: Path) -> list[str]:
    """The 200 RWKU names (for filling a registry with realistic extra targets in latency runs)."""
    path = data_dir / "rwku" / "all_200_targets_intro.json"
    return list(json.loads(path.read_text())) if path.exists() else []


def load_mmlu_questions(data_dir: Path, split: str = "test") -> list[str]:
    return [item.question for item in load_mmlu(data_dir, split)]


LETTERS = "ABCD"


class MultipleChoice(BaseModel):
    question: str
    choices: list[str]
    answer: int
    subject: str = ""

    def prompt(self) -> str:
        options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(self.choices))
        return f"{self.question}\n{options}\nAnswer with the letter of the correct option."

    def is_correct(self, output: str) -> bool:
        return self.picked(output) == self.answer

    def picked(self, output: str) -> int | None:
        """The option the model chose: the first standalone letter A-D, else the first option text it quotes."""
        match = re.search(r"\b([A-D])\b", output)
        if match:
            return LETTERS.index(match.group(1))
        lowered = output.casefold()
        for i, choice in enumerate(self.choices):
            if choice and choice.casefold() in lowered:
                return i
        return None


def load_mmlu(data_dir: Path, split: str = "test", limit: int | None = None) -> list[MultipleChoice]:
    """MMLU items, taken round-robin across subjects so that a small limit still spans them."""
    per_subject: list[list[MultipleChoice]] = []
    for path in sorted((data_dir / "mmlu" / split).glob("*.csv")):
        with path.open(newline="") as f:
            # question, four choices, answer index; the header row is optional
            rows = [r for r in csv.reader(f) if len(r) >= 6 and r[5].strip().isdigit()]
        subject = path.stem.removesuffix(f"_{split}")
        per_subject.append([MultipleChoice(question=r[0], choices=r[1:5], answer=int(r[5]), subject=subject)
                            for r in rows])
    out: list[MultipleChoice] = []
    for i in range(max((len(s) for s in per_subject), default=0)):
        out += [s[i] for s in per_subject if i < len(s)]
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out
