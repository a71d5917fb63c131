"""`tune.space` parsing and checks, the results writers and `--from-tune`, without Ray
(and the CLI refusing a bad space before Ray starts)."""

from __future__ import annotations

import math
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from wgen.cli import app
from wgen.config import ConfigError, load_config
from wgen.core.errors import InputFileError
from wgen.core.runtime import write_json
from wgen.tune.results import (
    COMPLETED,
    STOPPED,
    TrialRow,
    best_overrides,
    default_trial,
    trial_status,
    write_outputs,
)
from wgen.tune.space import (
    SearchSpaceError,
    evaluations_through,
    grid_points,
    iterations_per_trial,
    n_trials,
    parse_space,
    to_tune_space,
)


def space(value: str, *more: str):
    return load_config("tiny", [f"tune.space={value}", *more])


def test_grid_and_distributions_are_parsed_and_coerced():
    config = space(
        "{denoiser.block_size: [16, '32', 64.0], denoiser.index_dim: [8, 16], "
        "train.lr: {loguniform: ['1e-4', 1.0e-2]}}"
    )
    params = parse_space(config)
    assert params[0].values == (16, 32, 64) and all(type(v) is int for v in params[0].values)
    assert params[2].dist == "loguniform" and params[2].low == pytest.approx(1e-4)
    assert len(grid_points(params)) == 6 and n_trials(params, 3) == 18
    tune_space = to_tune_space(params)
    assert tune_space["denoiser.block_size"] == {"grid_search": [16, 32, 64]}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{denoiser.blocksize: [16]}", "denoiser.blocksize"),
        ("{denoiser.block_size: []}", "denoiser.block_size: the list of values is empty"),
        ("{denoiser.block_size: [16, 0]}", "denoiser.block_size: 0 is refused"),
        ("{denoiser.block_size: [-8]}", "b must be >= 1"),
        ("{denoiser.index_dim: [0, 8]}", "denoiser.index_dim: 0 is refused"),
        ("{denoiser.index_dim: [eight]}", "denoiser.index_dim"),
        ("{train.lr: {loguniform: [0, 1]}}", "train.lr"),
        ("{train.lr: {normal: [0, 1]}}", "unknown distribution 'normal'"),
        ("{train.lr: {uniform: [0.1, 0.01]}}", "low < high"),
        ("{train.lr: 0.001}", "expected a list of values"),
        ("{data.seed: [1, 2]}", "the 'data' section is fixed"),
        ("{block_size: [16]}", "must look like section.key"),
        ("{denoiser.block_size: [16, 16]}", "repeated values"),
        ("{train.workers: [3]}", "does not divide"),
        ("{}", "tune.space is empty"),
    ],
)
def test_a_bad_space_is_refused_naming_the_key(value, message):
    with pytest.raises(SearchSpaceError, match=None) as caught:
        parse_space(space(value))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_space_that_is_not_a_mapping_is_a_config_error():
    with pytest.raises(ConfigError, match="tune.space"):
        load_config("tiny", ["tune.space=[16, 32]"])


def test_the_evaluation_count_follows_the_epoch_so_a_resumed_trial_keeps_its_rung():
    config = load_config("tiny", ["train.epochs=25", "train.quality_every=10"])
    counts = [evaluations_through(epoch, config.train) for epoch in (1, 9, 10, 19, 20, 24, 25)]
    assert counts == [0, 0, 1, 1, 2, 2, 3]  # epochs 10, 20 and the last one, 25
    only_last = load_config("tiny", ["train.epochs=4", "train.quality_every=0"])
    assert [evaluations_through(e, only_last.train) for e in (1, 3, 4)] == [0, 0, 1]


def test_iterations_per_trial_counts_the_score_reports():
    assert iterations_per_trial(load_config("tiny")) == 1  # quality only at the end
    assert iterations_per_trial(load_config("demo")) == 3  # every 10 of 30 epochs
    assert (
        iterations_per_trial(load_config("tiny", ["train.epochs=5", "train.quality_every=2"])) == 3
    )


def test_cli_refuses_a_bad_space_before_ray_starts(tmp_path):
    import ray

    ray_before = ray.is_initialized()
    started = time.perf_counter()
    result = CliRunner().invoke(
        app,
        ["tune", "--preset", "tiny", "--out", str(tmp_path),
         "--set", "tune.space={denoiser.block_size: [0, 16]}"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "error: tune.space.denoiser.block_size: 0 is refused" in result.output
    assert not (tmp_path / "tune").exists()
    assert ray.is_initialized() == ray_before, "no Ray was started for a bad space"
    assert time.perf_counter() - started < 30


def _rows() -> list[TrialRow]:
    def row(trial_id, b, d, score, status=COMPLETED, latency=5.0, epochs=2):
        params = {"denoiser.block_size": b, "denoiser.index_dim": d, "train.lr": 1e-3}
        return TrialRow(trial_id, params, score, 0.5, epochs // 2, epochs, status, 10.0, latency)

    return [
        row("t0", 16, 8, 0.30, STOPPED, epochs=1),
        row("t1", 32, 8, 0.10),
        row("t2", 16, 16, 0.20),
        row("t3", 32, 16, math.nan, "error", math.nan),
    ]


def _summary(searched=("denoiser.block_size", "denoiser.index_dim")) -> dict:
    return {
        "metric": "quality_l1", "mode": "min", "space": "b × d", "searched": list(searched),
        "preset": "tiny", "overrides": ["train.epochs=2"], "trials": 4, "wall_seconds": 60.0,
        "sessions": 1, "max_concurrent_trials": 2, "grace_period": 1, "reduction_factor": 2.0,
        "iterations_full": 8, "iterations_used": 7, "stopped": 1,
    }  # fmt: skip


def test_results_are_sorted_by_score_and_the_report_compares_best_worst_default(tmp_path):
    frame = write_outputs(
        tmp_path, _rows(), _summary(), {"denoiser.block_size": 16, "denoiser.index_dim": 16}
    )
    assert list(frame["trial_id"]) == ["t1", "t2", "t0", "t3"]
    on_disk = pd.read_csv(tmp_path / "results.csv")
    assert list(on_disk.columns[:4]) == ["trial_id", "b", "d", "lr"]
    report = (tmp_path / "report.md").read_text()
    assert "best: b = 32, d = 8: score 0.1" in report
    # the worst was stopped early: the report says its score is from fewer epochs
    assert "best vs worst (t0): better by 0.2 (66.7%) (scored at 2 vs 1 epochs" in report
    assert "best vs default (b = 16, d = 16; t2): better by 0.1 (50.0%)\n" in report
    assert "7 trial-iterations of the full grid's 8" in report
    assert (tmp_path / "score_vs_b.png").stat().st_size > 0
    assert default_trial(frame, {"denoiser.block_size": 64}) is None


def test_from_tune_gives_the_search_settings_then_the_best_values(tmp_path):
    write_outputs(tmp_path / "tune", _rows(), _summary(), {})
    preset, overrides = best_overrides(tmp_path)
    assert preset == "tiny"
    assert overrides == ["train.epochs=2", "denoiser.block_size=32", "denoiser.index_dim=8"]
    config = load_config(preset, overrides)
    assert (config.denoiser.block_size, config.denoiser.index_dim) == (32, 8)
    write_json(tmp_path / "odd" / "best.json", {"a": 1})
    with pytest.raises(ConfigError, match="not a best.json"):
        best_overrides(tmp_path / "odd")
    with pytest.raises(InputFileError, match="wgen tune --out"):
        best_overrides(tmp_path / "nowhere")


def test_cli_train_from_tune_refuses_another_preset(tmp_path):
    write_outputs(tmp_path / "tune", _rows(), _summary(), {})
    result = CliRunner().invoke(
        app, ["train", "--from-tune", str(tmp_path), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--preset tiny" in result.output


@pytest.mark.parametrize(
    ("metrics", "errored", "status"),
    [({}, False, "unfinished"), ({"epoch": 1}, False, STOPPED), ({"epoch": 2}, False, COMPLETED),
     ({"epoch": 2}, True, "error")],
)  # fmt: skip
def test_trial_status(metrics, errored, status):
    assert trial_status(metrics, errored, epochs=2) == status
