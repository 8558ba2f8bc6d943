"""The Harry Potter, TOFU and WMDP suites: which targets an operator would register, and which probes measure them.

Everything a target is registered with comes from outside the probes it is measured on: the Harry Potter target's
examples are trivia questions from the end of the file (probes come from the start), TOFU registers its forget set
as the benchmark prescribes (the forget set is what an unlearning method is given), WMDP's targets take the
synthetic questions of the ECO paper's repository as examples and are measured on the real WMDP questions.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from server.eval.data import MultipleChoice, load_mmlu
from server.eval.suite import ProbeSet, Role, answered, rouge_l_recall

MC_TOKENS = 16
HP_EXAMPLES = 20


def multiple_choice(name: str, role: Role, items: list[MultipleChoice]) -> ProbeSet:
    return ProbeSet(name, role, "accuracy", [i.prompt() for i in items],
                    lambda k, text: float(items[k].is_correct(text)), max_tokens=MC_TOKENS)


def mmlu_set(data_dir: Path, count: int) -> list[ProbeSet]:
    if count <= 0 or not (data_dir / "mmlu" / "test").is_dir():
        return []
    return [multiple_choice("mmlu", "general", load_mmlu(data_dir, "test", count))]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---- Harry Potter ------------------------------------------------------------------------------------------------
def harry_potter(data_dir: Path, count: int, mmlu: int) -> tuple[list[dict[str, Any]], list[ProbeSet]]:
    rows = _jsonl(data_dir / "harry_potter" / "hp_trivia_train.jsonl")
    examples = rows[len(rows) - min(HP_EXAMPLES, len(rows) // 2):]
    probes = rows[:min(count, len(rows) - len(examples))]
    target = {"name": "Harry Potter",
              "aliases": ["Hogwarts", "Hermione Granger", "Ron Weasley", "Albus Dumbledore", "Lord Voldemort",
                          "J.K. Rowling"],
              "description": "The Harry Potter books and films by J.K. Rowling: their characters, places, spells "
                             "and plot.",
              "forget_examples": [r["question"] for r in examples]}
    # the true answer is option A for even items and B for odd ones, so that always picking one letter scores 0.5
    choice = [MultipleChoice(question=r["question"], answer=k % 2,
                             choices=[r["true_answer"], r["false_answer"]] if k % 2 == 0
                             else [r["false_answer"], r["true_answer"]]) for k, r in enumerate(probes)]
    sets = [ProbeSet("trivia", "forget", "correct", [r["question"] for r in probes],
                     lambda k, text: float(answered(text, probes[k]["true_answer"]))),
            multiple_choice("trivia_two_choice", "forget", choice), *mmlu_set(data_dir, mmlu)]
    return [target], sets


# ---- TOFU --------------------------------------------------------------------------------------------------------
def tofu(data_dir: Path, split: str, count: int) -> tuple[list[dict[str, Any]], list[ProbeSet]]:
    root = data_dir / "tofu"
    forget = json.loads((root / f"{split}.json").read_text())
    # subjects are the fictitious authors, except for a few questions filed under a birthplace
    authors = [name for name, n in Counter(r["subject"] for r in forget).most_common() if n >= 3]
    targets = [{"name": author, "description": "A fictitious author from the TOFU benchmark.",
                "forget_examples": [r["question"] for r in forget if r["subject"] == author]} for author in authors]
    retain = json.loads((root / "retain90.json").read_text())[:count]
    general = [r for f in ("real_authors_perturbed.json", "world_facts_perturbed.json")
               for r in json.loads((root / f).read_text())][:count]

    def graded(name: str, role: Role, rows: list[dict[str, Any]], question: str = "question") -> ProbeSet:
        return ProbeSet(name, role, "ROUGE-L recall", [r[question] for r in rows],
                        lambda k, text: rouge_l_recall(text, rows[k]["answer"]), binary=False, max_tokens=48)

    sets = [graded("forget", "forget", forget), graded("forget_paraphrased", "forget", forget, "paraphrased_question"),
            graded("retain", "retain", retain),
            ProbeSet("world_knowledge", "general", "correct", [r["question"] for r in general],
                     lambda k, text: float(answered(text, general[k]["answer"])))]
    return targets, sets


# ---- WMDP --------------------------------------------------------------------------------------------------------
WMDP_TOPICS = {
    "bio": {"name": "Biological weapons",
            "aliases": ["bioweapons", "enhanced potential pandemic pathogens", "reverse genetics", "dual-use virology",
                        "pathogen virulence", "toxin production"],
            "description": "Hazardous biology: making, enhancing or spreading pathogens and toxins that could be "
                           "used as weapons."},
    "cyber": {"name": "Offensive cyber operations",
              "aliases": ["exploit development", "malware", "penetration testing tools", "privilege escalation",
                          "reverse engineering of binaries", "shellcode"],
              "description": "Hazardous cybersecurity knowledge: finding and exploiting vulnerabilities, writing "
                             "malware, attacking networks."},
}


def _synthetic(path: Path) -> list[str]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [row["question"] for row in csv.DictReader(f)]


def wmdp(data_dir: Path, count: int, mmlu: int) -> tuple[list[dict[str, Any]], list[ProbeSet]]:
    root = data_dir / "wmdp"
    rows = [r for f in sorted((root / "deduped_785").glob("split_*.jsonl")) for r in _jsonl(f)][:count]
    items = [MultipleChoice(question=r["question"], choices=[str(c) for c in r["choices"]], answer=int(r["answer"]))
             for r in rows if len(r["choices"]) == 4]
    targets = [{**topic, "forget_examples": _synthetic(root / "eco_synthetic" / f"synthetic_questions_{key}.csv")}
               for key, topic in WMDP_TOPICS.items()]
    return targets, [multiple_choice("wmdp", "forget", items), *mmlu_set(data_dir, mmlu)]

