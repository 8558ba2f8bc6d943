from pathlib import Path

import pytest
from transformers import AutoTokenizer

from server.engines.detokenize import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tokenizer(model_path: Path):
    return AutoTokenizer.from_pretrained(model_path)


def _run(tokenizer, text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    detok = IncrementalDetokenizer(tokenizer, stop)
    out = []
    for token in tokenizer.encode(text, add_special_tokens=False):
        delta, hit = detok.push(token)
        out.append(delta)
        if hit:
            return "".join(out), True
    out.append(detok.flush())
    return "".join(out), False


def test_streamed_text_equals_decoded_text(tokenizer) -> None:
    text = "Héllo wörld — naïve café 🙂 and some ünïcödé."
    assert _run(tokenizer, text, ()) == (tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)), False)


def test_stop_string_is_cut_and_not_leaked_while_streaming(tokenizer) -> None:
    text, hit = _run(tokenizer, "The capital of France is Paris. It is big.", ("Paris",))
    assert hit and text == "The capital of France is "


def test_multi_token_stop_string_is_held_back(tokenizer) -> None:
    detok = IncrementalDetokenizer(tokenizer, ("is Paris",))
    seen = ""
    for token in tokenizer.encode("The capital is Paris indeed", add_special_tokens=False):
        delta, hit = detok.push(token)
        seen += delta
        assert "is P" not in seen
        if hit:
            break
    assert hit and seen == "The capital "
