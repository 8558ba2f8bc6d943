"""The reference engine's per-row LoRA: several adapters in one forward equal each adapter applied to its rows."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from server.engines.lora import LoRAAdapter
from server.engines.row_lora import RowLoRA


def _adapter(seed: int, modules: dict[str, torch.nn.Linear], rank: int) -> LoRAAdapter:
    g = torch.Generator().manual_seed(seed)
    weights = {n: (torch.randn(rank, m.in_features, generator=g), torch.randn(m.out_features, rank, generator=g))
               for n, m in modules.items()}
    return LoRAAdapter(rank=rank, alpha=2.0 * rank, target_modules=list(modules), weights=weights)


def _row(name: str | None, scale: float = 1.0) -> SimpleNamespace:
    lora = None if name is None else SimpleNamespace(name=name, scale=scale)
    return SimpleNamespace(request=SimpleNamespace(lora=lora))


def _forward(lora: RowLoRA, model: torch.nn.Sequential, x: torch.Tensor, rows: list[SimpleNamespace]) -> torch.Tensor:
    lora.select(rows)
    with lora.installed(), torch.no_grad():
        return model(x)


def test_several_adapters_in_one_batch_match_each_alone() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 20), torch.nn.Linear(20, 12))
    modules = {"0": model[0], "1": model[1]}
    adapters = {"a": _adapter(1, modules, 4), "b": _adapter(2, modules, 2),
                "c": _adapter(3, {"1": model[1]}, 4)}  # "c" touches one of the two modules
    lora = RowLoRA(modules, adapters)
    rows = [_row("b", 0.5), _row(None), _row("a", 1.0), _row("c", 2.0), _row("a", 0.25), _row("b", 1.0)]
    x = torch.randn(len(rows), 3, 12)

    batched = _forward(lora, model, x, rows)
    for i, row in enumerate(rows):
        alone = _forward(lora, model, x[i:i + 1], [row])
        torch.testing.assert_close(batched[i:i + 1], alone, rtol=1e-5, atol=1e-5)
    # against the same batch with no adapter at all: MKL's kernels depend on the batch's shape, so a row alone is
    # not bit-identical to it in a batch even without LoRA (on AVX-512 machines)
    plain = _forward(lora, model, x, [_row(None)] * len(rows))
    assert torch.equal(batched[1:2], plain[1:2]), "a row without an adapter must be untouched"
    for i in (0, 2, 3):
        assert not torch.allclose(batched[i:i + 1], _forward(lora, model, x[i:i + 1], [_row(None)]))

    # the stacks are reused for the same set of adapters, rebuilt for a reloaded one
    _forward(lora, model, x, rows)
    first = lora._current
    _forward(lora, model, x, rows)
    assert lora._current is first
    adapters["a"] = _adapter(7, modules, 4)
    reloaded = _forward(lora, model, x, rows)
    assert lora._current is not first
    torch.testing.assert_close(reloaded[0], batched[0], rtol=1e-5, atol=1e-5)  # row of "b" unchanged
    assert not torch.allclose(reloaded[2], batched[2])


def test_one_flagged_run_of_rows_takes_the_unmasked_path_with_the_same_result() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 20), torch.nn.Linear(20, 12))
    modules = {"0": model[0], "1": model[1]}
    lora = RowLoRA(modules, {"a": _adapter(1, modules, 4)})
    x = torch.randn(5, 2, 12)
    cases = {  # rows -> whether they form one run at one strength
        (None, "a", "a", None, None): True,
        ("a", None, "a", None, None): False,  # split run
        (None, "a", "a", None, "x"): False,  # two strengths (x: "a" at 0.5)
    }
    for names, one_run in cases.items():
        rows = [_row(None) if n is None else _row("a", 0.5 if n == "x" else 1.0) for n in names]
        batched = _forward(lora, model, x, rows)
        assert (lora._span is not None) == one_run
        plain = _forward(lora, model, x, [_row(None)] * len(rows))  # same shape: same base kernels
        for i, row in enumerate(rows):
            if row.request.lora is None:
                assert torch.equal(batched[i:i + 1], plain[i:i + 1]), "a row without an adapter must be untouched"
            else:
                alone = _forward(lora, model, x[i:i + 1], [row])
                torch.testing.assert_close(batched[i:i + 1], alone, rtol=1e-5, atol=1e-5)
                assert not torch.allclose(batched[i:i + 1], _forward(lora, model, x[i:i + 1], [_row(None)]))
