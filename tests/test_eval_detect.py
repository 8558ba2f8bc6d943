"""The detect suite on a tiny RWKU-shaped folder made here, and its quality gate on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.eval.data import load_rwku
from server.eval.detect import run_detect
from tests.conftest import SHARED_DATA


def _write(folder: Path, name: str, forget: list[str], neighbor: list[str]) -> None:
    folder.mkdir(parents=True)
    (folder / "intro.json").write_text(json.dumps([{"target": name, "intro": f"Please forget {name}. A person."}]))
    for level in (1, 2, 3):
        (folder / f"forget_level{level}.json").write_text(json.dumps(
            [{"query": q, "answer": "x", "level": str(level)} for q in forget]))
    for level in (1, 2):
        (folder / f"neighbor_level{level}.json").write_text(json.dumps(
            [{"query": q, "answer": "y", "level": str(level)} for q in neighbor]))
    (folder / "passages.json").write_text(json.dumps([{"text": f"{name} is a person. This paragraph is about them."}]))


def test_detect_suite_on_a_tiny_folder(tmp_path: Path, model_path: Path) -> None:
    from transformers import AutoTokenizer

    root = tmp_path / "data"
    _write(root / "rwku" / "Target" / "1_Stephen_King", "Stephen King",
           ["What did Stephen King write?", "Who wrote Carrie?"], ["Who directed The Shining film?"])
    _write(root / "rwku" / "Target" / "2_Ada_Lovelace", "Ada Lovelace",
           ["Where was Lovelace born?", "What did Ada Lovelace study?"], ["Who was Charles Babbage?"])
    (root / "mmlu" / "test").mkdir(parents=True)
    (root / "mmlu" / "test" / "x_test.csv").write_text(
        "What is the king of the hill?,a,b,c,d,0\nWho wrote about Lovelace's engine?,a,b,c,d,1\n")
    assert [t.name for t in load_rwku(root)] == ["Stephen King", "Ada Lovelace"]

    report = run_detect(root, AutoTokenizer.from_pretrained(model_path), latency_sizes=(1, 2))
    # each target: the first probe names it, the second does not
    assert report.detect_tpr == {"l1": 0.75, "l2": 0.75, "l3": 0.75}
    assert report.neighbor_fpr["all"] == 0.0
    assert report.general_fpr == 0.5  # "Lovelace's" names the target; "king" alone does not
    assert report.probes["forget_l1"] == 4 and report.probes["general"] == 2
    assert report.register_with == "passages"
    assert [lat.targets for lat in report.latency] == [1, 2]
    assert "[Stephen King] Who wrote Carrie?" in report.misses["l1"]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "rwku").is_dir(), reason="shared/data is not present")
def test_detection_quality_gate_on_rwku(model_path: Path) -> None:
    """Guards the figures reached so far against regressions (the issue's full targets are not all met yet)."""
    from transformers import AutoTokenizer

    report = run_detect(SHARED_DATA, AutoTokenizer.from_pretrained(model_path), latency_sizes=(1, 10))
    assert report.targets == 50
    assert report.general_fpr <= 0.01
    assert report.neighbor_fpr["all"] <= 0.10
    assert report.detect_tpr["l2"] >= 0.95
    assert report.detect_tpr["l1"] >= 0.90 and report.detect_tpr["l3"] >= 0.60
