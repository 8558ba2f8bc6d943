from pathlib import Path

import pytest
from transformers import AutoTokenizer

from classifiers.forbidden_tokens import forbidden_sequences, spellings
from classifiers.terms import Term


@pytest.fixture(scope="module")
def tokenizer(model_path: Path):
    return AutoTokenizer.from_pretrained(model_path)


def test_spellings_cover_case_and_leading_space() -> None:
    s = spellings("Ron Weasley")
    assert {"Ron Weasley", " Ron Weasley", "ron weasley", " RON WEASLEY"} <= set(s)


def test_sequences_are_what_the_model_would_emit(tokenizer) -> None:
    seqs = forbidden_sequences([Term("Ron Weasley"), Term("Ron", case_sensitive=True)], tokenizer)
    as_tuples = {tuple(s) for s in seqs}
    for text in ("Ron", " Ron", " ron", " Ron Weasley", "Ron Weasley"):
        assert tuple(tokenizer.encode(text, add_special_tokens=False)) in as_tuples, text
    assert len(as_tuples) == len(seqs)  # no duplicates
    assert [len(s) for s in seqs] == sorted((len(s) for s in seqs), reverse=True)
