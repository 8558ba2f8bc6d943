"""ECO's corruption functions and the mapping of detected terms onto prompt tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from guards.eco import (
    CORRUPTIONS,
    content_spans,
    corrupt,
    corrupt_prompt,
    corrupted_positions,
    positions_in,
    prompt_seed,
    token_offsets,
)


def test_corruption_touches_only_the_flagged_rows_and_is_reproducible() -> None:
    embeds = torch.randn(6, 8)
    before = embeds.clone()
    out = corrupt(embeds, [1, 3], "rand_noise_first_n", 5.0, None, seed=7)
    assert torch.equal(embeds, before)  # the input is not modified
    changed = (out != embeds).any(dim=1).nonzero().flatten().tolist()
    assert changed == [1, 3]
    assert torch.equal(out, corrupt(embeds, [3, 1], "rand_noise_first_n", 5.0, None, seed=7))
    assert not torch.equal(out, corrupt(embeds, [1, 3], "rand_noise_first_n", 5.0, None, seed=8))
    assert corrupt(embeds, [], "rand_noise_first_n", 5.0, None, seed=7) is embeds


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_first_n_functions_leave_the_other_dims_alone(name: str) -> None:
    embeds = torch.randn(3, 8) + 1.0
    out = corrupt(embeds, [0, 1, 2], name, 2.0, 3, seed=0)
    assert torch.equal(out[:, 3:], embeds[:, 3:]) and not torch.equal(out[:, :3], embeds[:, :3])


def test_prompt_seed_depends_on_the_tokens_only() -> None:
    assert prompt_seed([1, 2, 3]) == prompt_seed([1, 2, 3]) != prompt_seed([1, 2, 4])


def test_term_spans_map_onto_the_tokens_that_spell_them(model_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(model_path)
    ids = tok.apply_chat_template([{"role": "user", "content": "Who is Harry Potter's best friend?"}],
                                  add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    text, offsets = token_offsets(ids, tok)
    start = text.index("Harry Potter")
    positions = positions_in([(start, start + len("Harry Potter"))], offsets)
    assert tok.decode([ids[p] for p in positions]).strip() == "Harry Potter"
    whole = positions_in(content_spans(text, ["Who is Harry Potter's best friend?"]), offsets)
    assert set(positions) < set(whole)
    assert tok.decode([ids[p] for p in whole]).strip() == "Who is Harry Potter's best friend?"


def test_scope_picks_the_whole_message_or_the_terms(model_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(model_path)
    question = "Rhea Perlman (born March 31, 1948) is an American ___"
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def find(text: str) -> list[tuple[int, int]]:
        start = text.find("Rhea Perlman")
        return [(start, start + len("Rhea Perlman"))] if start >= 0 else []

    prompt, boosted = corrupted_positions(ids, tok, find, [question], "prompt")
    terms, none = corrupted_positions(ids, tok, find, [question], "terms")
    assert tok.decode([ids[p] for p in prompt]).strip() == question  # the template stays clean
    assert tok.decode([ids[p] for p in terms]).strip() == "Rhea Perlman"
    assert boosted == terms and none == [], "the whole prompt's name is corrupted harder; the terms scope has no boost"
    # no literal term: the terms scope falls back on the whole message
    assert corrupted_positions(ids, tok, lambda text: [], [question], "terms") == (prompt, [])


def test_the_name_gets_the_boosted_strength() -> None:
    embeds = torch.zeros(6, 4)
    out = corrupt_prompt(embeds, [1, 2, 3, 4], [2, 3], "rand_noise_first_n", 0.1, None, seed=3, term_boost=10.0)
    assert torch.count_nonzero(out[[0, 5]]) == 0
    assert out[[1, 4]].abs().max() < out[[2, 3]].abs().max()
    signed = torch.randn(3, 4)
    flipped = corrupt_prompt(signed, [1, 2], [2], "flip_sign_first_n", 1.0, None, 0, 10.0)
    assert torch.equal(flipped[1:], -signed[1:]), "a boosted position is corrupted once, not twice"
    plain = corrupt_prompt(embeds, [1, 2, 3], [2], "rand_noise_first_n", 0.1, None, seed=3, term_boost=1.0)
    assert torch.equal(plain, corrupt(embeds, [1, 2, 3], "rand_noise_first_n", 0.1, None, seed=3))
