"""benchmarks/generator_quality.py refuses a --ceilings folder it cannot use, in one line."""

import importlib.util
from pathlib import Path

import pytest

from wgen.data.pairs import CONCEPTS_FILE

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "generator_quality.py"


def _script():
    spec = importlib.util.spec_from_file_location("generator_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ceilings_must_be_a_run_folder_over_the_same_concepts(tmp_path):
    check = _script().check_ceilings
    out, ceilings = tmp_path / "run", tmp_path / "ceil"
    out.mkdir()
    ceilings.mkdir()
    (out / CONCEPTS_FILE).write_text('{"id": "c0000"}\n')
    with pytest.raises(SystemExit, match="not a run folder"):
        check(ceilings, out)
    (ceilings / CONCEPTS_FILE).write_text('{"id": "c0001"}\n')
    with pytest.raises(SystemExit, match="its concepts differ"):
        check(ceilings, out)
    (ceilings / CONCEPTS_FILE).write_text('{"id": "c0000"}\n')
    check(ceilings, out)  # the same concepts: accepted


def test_components_split_a_trained_denoiser_into_its_readout_and_its_unet():
    """--components: the two parts add up to the whole model, and the readout part ignores
    the noised input (it reads only the text and the block index)."""
    import torch

    from wgen.config import DenoiserConfig
    from wgen.models.denoiser import build_denoiser

    torch.manual_seed(0)
    cfg = DenoiserConfig(size="tiny", block_size=16, index_dim=8, text="pooled", block_readout=4)
    model = build_denoiser(cfg, 6, n_blocks=5).eval()
    for p in model.parameters():  # trained-looking weights: the zero-initialised ones too
        torch.nn.init.normal_(p, std=0.1)
    parts = _script().denoiser_parts(model)
    t, n, text = torch.tensor([3, 3]), torch.tensor([1, 4]), torch.randn(2, 6)
    x, other_x = torch.randn(2, 1, 16), torch.randn(2, 1, 16)
    with torch.no_grad():
        whole = model(x, t, n, text)
        readout, unet = (parts[k](x, t, n, text) for k in ("readout-only", "unet-only"))
        assert torch.allclose(readout + unet, whole, atol=1e-5)
        assert torch.equal(parts["readout-only"](other_x, t, n, text), readout)
        assert not torch.allclose(unet, torch.zeros_like(unet))
    model.readout = None
    with pytest.raises(SystemExit, match="no block readout"):
        _script().denoiser_parts(model)


def test_average_is_the_factorwise_mean_and_needs_two_generators(tmp_path, monkeypatch):
    import sys

    import torch

    module = _script()
    states = [{"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.0]])},
              {"a": torch.tensor([3.0, 6.0]), "b": torch.tensor([[4.0]])}]  # fmt: skip
    mean = module.average_loras(states)
    assert torch.equal(mean["a"], torch.tensor([2.0, 4.0])) and torch.equal(
        mean["b"], torch.tensor([[2.0]])
    )
    argv = [
        "generator_quality.py",
        "--out",
        str(tmp_path),
        "--generator",
        f"one={tmp_path}",
        "--average",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="--average needs two or more --generator"):
        module.main()
