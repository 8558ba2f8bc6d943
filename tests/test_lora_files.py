from pathlib import Path

import torch

from server.engines.lora import LoRAAdapter, write_scaled_copies


def _adapter() -> LoRAAdapter:
    g = torch.Generator().manual_seed(0)
    weights = {f"model.layers.{i}.self_attn.q_proj": (torch.randn(4, 8, generator=g), torch.randn(8, 4, generator=g))
               for i in range(2)}
    return LoRAAdapter(rank=4, alpha=8.0, target_modules=["q_proj"], weights=weights)


def test_round_trip_and_scaled_copies(tmp_path: Path) -> None:
    adapter = _adapter()
    adapter.save(tmp_path / "src")
    loaded = LoRAAdapter.load(tmp_path / "src")
    assert loaded.rank == 4 and loaded.scaling == 2.0
    for name, (a, b) in adapter.weights.items():
        assert torch.equal(loaded.weights[name][0], a) and torch.equal(loaded.weights[name][1], b)
    copies = write_scaled_copies(tmp_path / "src", tmp_path / "out", "t", [0.5, 1.0])
    half = LoRAAdapter.load(copies[0.5])
    for name, (a, b) in adapter.weights.items():
        assert torch.equal(half.weights[name][0], a)
        assert torch.allclose(half.weights[name][1], 0.5 * b)
    assert torch.equal(LoRAAdapter.load(copies[1.0]).weights[name][1], b)


def test_reference_engine_refuses_an_adapter_for_another_model(hf_server, tmp_path: Path) -> None:
    import pytest

    from server.errors import InvalidRequestError

    wrong = LoRAAdapter(rank=4, alpha=8.0, target_modules=["q_proj"],
                        weights={"model.layers.0.self_attn.q_proj": (torch.zeros(4, 10), torch.zeros(10, 4))})
    wrong.save(tmp_path / "wrong")
    with pytest.raises(InvalidRequestError, match="does not fit"):
        hf_server.call(hf_server.engine.load_lora("wrong", tmp_path / "wrong"))
    absent = LoRAAdapter(rank=4, alpha=8.0, target_modules=["nope"],
                         weights={"model.nope": (torch.zeros(4, 10), torch.zeros(10, 4))})
    absent.save(tmp_path / "absent")
    with pytest.raises(InvalidRequestError, match="does not have"):
        hf_server.call(hf_server.engine.load_lora("absent", tmp_path / "absent"))
    assert "wrong" not in hf_server.engine.loaded_loras()
