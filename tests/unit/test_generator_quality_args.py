"""benchmarks/generator_quality.py: its argument checks, its ablation and ensemble probes, and
the bootstrap intervals it prints (also from a stored result, --from-json)."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
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


def test_bootstrap_interval_brackets_the_statistic_and_narrows_with_more_concepts():
    import numpy as np

    module = _script()
    rng = np.random.default_rng(1)
    few, many = rng.normal(1.0, 1.0, 24), rng.normal(1.0, 1.0, 600)
    low, high = module.bootstrap_interval(np.mean, few)
    assert low < few.mean() < high
    assert module.bootstrap_interval(np.mean, few) == (low, high)  # fixed seed: reproducible
    many_low, many_high = module.bootstrap_interval(np.mean, many)
    assert many_high - many_low < (high - low) / 3  # ~ 1/sqrt(n): 5x narrower
    # the gap statistic resamples its three columns together, concept by concept
    # (independent draws would spread this gap of exactly 0.5 on every resample)
    shift = rng.uniform(0.0, 0.5, 24)
    mean, own = 0.2 + shift, 0.1 + shift
    interval = module.bootstrap_interval(module.gap_closed, mean, own + 0.05, own)
    assert interval == pytest.approx((0.5, 0.5))


def _stored_result(path, generator_minus_hyper: float):
    """A --json result: 6 concepts per split, the generator a fixed distance from hyper."""
    rows = []
    for split in ("val", "heldout"):
        for i in range(6):
            hyper = 0.10 + 0.01 * i
            l1 = {"mean": 0.20, "own": 0.05, "ridge": hyper + 0.02, "hyper": hyper}
            l1["wgen"] = hyper + generator_minus_hyper
            for method, value in l1.items():
                rows.append(
                    {"concept_id": f"{split}{i}", "split": split, "kind": "", "method": method,
                     "l1": value, "psnr": 20.0}
                )  # fmt: skip
    path.write_text(json.dumps({"generators": {"wgen": {}}, "per_concept": rows}))
    return path


def test_from_json_reprints_tables_and_intervals_without_scoring(tmp_path, monkeypatch, capsys):
    import sys

    module = _script()
    stored = _stored_result(tmp_path / "result.json", generator_minus_hyper=-0.01)
    monkeypatch.setattr(sys, "argv", ["generator_quality.py", "--from-json", str(stored)])
    module.main()
    printed = capsys.readouterr().out
    assert printed.count("95% bootstrap intervals") == 2
    rows = pd.DataFrame(json.loads(stored.read_text())["per_concept"])
    table = module.intervals(rows, "heldout", ["wgen"])
    row = table.loc["wgen"]
    # every concept 0.01 better than hyper: the interval has no width
    assert row["l1_minus_hyper"] == pytest.approx(-0.01)
    assert (row["low"], row["high"]) == pytest.approx((-0.01, -0.01))
    # gap: (0.20 - mean(wgen)) / (0.20 - 0.05), with mean(wgen) = 0.125 - 0.01
    assert row["gap_closed"] == pytest.approx((0.20 - 0.115) / 0.15)
    assert row["gap_low"] < row["gap_closed"] < row["gap_high"]


def test_from_json_refuses_what_is_not_a_stored_result_in_one_line(tmp_path, monkeypatch):
    import sys

    module = _script()
    for bad, message in (
        (tmp_path / "missing.json", "no such file"),
        (tmp_path / "other.json", "no per_concept rows"),
    ):
        if bad.name == "other.json":
            bad.write_text("{}")
        monkeypatch.setattr(sys, "argv", ["generator_quality.py", "--from-json", str(bad)])
        with pytest.raises(SystemExit, match=message):
            module.main()
    monkeypatch.setattr(sys, "argv", ["generator_quality.py"])
    with pytest.raises(SystemExit):  # neither --out nor --from-json: argparse's usage error
        module.main()
