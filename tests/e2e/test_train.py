"""The train stage on the tiny preset, on the shared local Ray: the generator it writes,
resuming a re-submitted run, a worker killed mid-training, and `wgen generate`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.e2e.damaged import refused_naming, truncate
from tests.e2e.interrupt import interrupt_wgen
from tests.e2e.trainrun import registered_epoch
from tests.e2e.weights import collect_without_ray
from wgen.cli import app
from wgen.config import load_config
from wgen.core.integrity import stage_files
from wgen.core.runfolder import LOCK_FILE, stage_record
from wgen.core.runtime import SUCCESS_FILE, write_json
from wgen.data.pairs import run_pairs
from wgen.gan.lora import load_adapter, trainable_state_dict
from wgen.gan.training import BaseGAN
from wgen.generator.checkpoint import WeightGenerator
from wgen.generator.fit import (
    GENERATOR_DIR,
    PROGRESS_DIR,
    fit_generator,
    read_progress,
    run_name,
    run_train,
)
from wgen.generator.schedule import LR_FLOOR
from wgen.models.base import BASE_DIR
from wgen.models.gan import build_discriminator, build_generator, fingerprint
from wgen.weights.store import WeightStore

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

# Six concepts (4 train, 2 val) with enough steps that all of them converge and are stored.
COLLECT = ["collect.max_concepts=6", "collect.max_steps=200"]


def tiny(*overrides: str):
    return load_config("tiny", COLLECT + list(overrides))


@pytest.fixture(scope="module")
def weights_run(ray_local, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train_run")
    run_pairs(tiny(), out)
    collect_without_ray(tiny(), out)
    splits = WeightStore(out).read(with_vectors=False).groupby("split")["concept_id"].nunique()
    assert splits.get("train", 0) >= 2 and splits.get("val", 0) >= 1, splits
    return out


@pytest.fixture(scope="module")
def trained(weights_run) -> Path:
    """Two epochs of the tiny preset; the generator is exported to <out>/generator."""
    run_train(tiny("train.epochs=2"), weights_run)
    return weights_run


def progress_dir(out: Path, config) -> Path:
    return out / "ray_results" / run_name(config) / PROGRESS_DIR


def test_train_exports_a_generator_that_rebuilds_itself(trained):
    folder = trained / GENERATOR_DIR
    generator = WeightGenerator.load(folder)
    assert generator.info["epoch"] == 2
    metrics = generator.info["metrics"]
    # the default objective: whole concepts, L_diff + λ_f·L_func (no separate block pass)
    for key in ("concept_diff_loss", "func_loss", "val_loss", "quality_l1", "quality_psnr"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    base = BaseGAN.load(trained / BASE_DIR)
    generator.check_base(base.fingerprint)
    generator.check_base(WeightStore(trained).manifest().fingerprint)
    run_dir = trained / "ray_results" / run_name(tiny())
    checkpoints = sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())
    assert checkpoints and (checkpoints[-1] / "optimizer.safetensors").exists()
    assert (trained / "text" / "minilm.tokens.parquet").exists(), "token states are cached"


def test_a_rerun_resumes_from_the_latest_checkpoint_and_a_finished_run_is_skipped(trained):
    # The schedule and the exported epoch are not part of the model: the same run resumes.
    config = tiny(
        "train.epochs=3", "train.lr_schedule=cosine", "train.export=best", "train.quality_every=1"
    )
    run_train(config, trained)
    starts = [e for e in read_progress(progress_dir(trained, config)) if e["event"] == "start"]
    assert starts[-1]["resumed_epoch"] == 2, "the second job continued from epoch 2"
    generator = WeightGenerator.load(trained / GENERATOR_DIR)
    history = generator.info["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]  # (that training lowers the loss:
    # tests/models/test_funcspace.py; 6 tiny steps here are too few to show it reliably)
    assert history[2]["lr"] == pytest.approx(config.train.lr * LR_FLOOR)  # cosine's last epoch

    # export=best wrote the probed epoch (2: the first job's last, 3) with the lowest score,
    # and those are that epoch's weights, as its Ray Train checkpoint holds them
    probed = {h["epoch"]: h["quality_l1"] for h in history if "quality_l1" in h}
    assert sorted(probed) == [2, 3]
    best = min(probed, key=probed.get)
    assert generator.info["epoch"] == best and generator.info["epochs_trained"] == 3
    assert generator.info["exported"] == "best"
    run_dir = trained / "ray_results" / run_name(config)
    (checkpoint,) = [
        p for p in run_dir.glob("checkpoint_*")
        if p.is_dir() and json.loads((p / "train_state.json").read_text())["epoch"] == best
    ]  # fmt: skip
    exported = load_file(str(trained / GENERATOR_DIR / "denoiser.safetensors"))
    for key, value in load_file(str(checkpoint / "denoiser.safetensors")).items():
        assert torch.equal(exported[key], value), key

    info_file = trained / GENERATOR_DIR / "generator.json"
    mtime = info_file.stat().st_mtime_ns
    events = len(read_progress(progress_dir(trained, config)))
    run_train(config, trained)  # complete: nothing to do
    assert info_file.stat().st_mtime_ns == mtime
    assert len(read_progress(progress_dir(trained, config))) == events, "no worker started"


def test_a_killed_worker_resumes_from_its_checkpoint(weights_run, tmp_path):
    config = tiny("train.epochs=4")
    storage, name = tmp_path / "ray_results", "kill-test"
    progress = storage / name / PROGRESS_DIR
    results, errors = [], []

    def fit() -> None:
        try:
            results.append(fit_generator(config, weights_run, name=name, storage_path=storage))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    thread = threading.Thread(target=fit)
    thread.start()
    victim, deadline = None, time.time() + 240
    while victim is None and time.time() < deadline and thread.is_alive():
        epochs = [e for e in read_progress(progress) if e["event"] == "epoch"]
        if epochs and registered_epoch(storage / name) >= 1:
            victim = epochs[0]["pid"]
        time.sleep(0.05)
    assert victim is not None, f"no epoch was checkpointed: {errors}"
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors

    events = read_progress(progress)
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["pid"] != victim
    assert starts[1]["resumed_epoch"] >= 1, "the new worker resumed from a checkpoint, not epoch 0"
    after = [e["epoch"] for e in events if e["event"] == "epoch" and e["pid"] == starts[1]["pid"]]
    assert after == list(range(starts[1]["resumed_epoch"] + 1, 5))
    assert results[0].metrics["epoch"] == 4


def test_cli_generate_writes_an_adapter_that_loads_into_the_base(trained, tmp_path):
    adapter = tmp_path / "adapter"
    result = CliRunner().invoke(
        app,
        ["generate", "--generator", str(trained / GENERATOR_DIR), "--concept",
         "a strong sepia tone with a soft vignette", "--out", str(adapter), "--steps", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert " ms (2 DDIM steps" in result.output
    base = BaseGAN.load(trained / BASE_DIR)
    model = load_adapter(base.build_generator(), adapter, base.fingerprint)
    assert any(v.abs().sum() > 0 for k, v in trainable_state_dict(model).items() if "lora_B" in k)


def _generate(*args: str):
    return CliRunner().invoke(app, ["generate", *args])


def test_cli_generate_errors_are_clear(trained, tmp_path):
    generator = str(trained / GENERATOR_DIR)
    out = str(tmp_path / "adapter")

    empty = _generate("--generator", generator, "--concept", "   ", "--out", out)
    assert empty.exit_code == 2 and "concept text is empty" in empty.output

    other_generator = build_generator("tiny", seed=123)
    other = BaseGAN(
        "tiny",
        other_generator.state_dict(),
        build_discriminator("tiny", seed=124).state_dict(),
        fingerprint(other_generator, "tiny"),
    )
    other.save(tmp_path / "other_base")
    wrong = _generate(
        "--generator", generator, "--concept", "sepia", "--out", out,
        "--base", str(tmp_path / "other_base"),
    )  # fmt: skip
    assert wrong.exit_code == 2
    assert other.fingerprint in wrong.output
    assert WeightGenerator.load(trained / GENERATOR_DIR).fingerprint in wrong.output

    broken = tmp_path / "broken"
    shutil.copytree(trained / GENERATOR_DIR, broken)
    (broken / "block_codec.safetensors").unlink()
    missing = _generate("--generator", str(broken), "--concept", "sepia", "--out", out)
    assert missing.exit_code == 2 and "missing ['block_codec.safetensors']" in missing.output

    steps = _generate("--generator", generator, "--concept", "sepia", "--out", out, "--steps", "0")
    assert steps.exit_code == 2 and "--steps" in steps.output
    assert not (tmp_path / "adapter").exists(), "no error wrote an adapter"


def test_ctrl_c_during_training_exits_130_and_says_how_to_resume(ray_local, weights_run, tmp_path):
    """Ray Train's own SIGINT handler used to turn Ctrl-C into a silent exit 1."""
    out = tmp_path / "run"
    shutil.copytree(weights_run, out, ignore=shutil.ignore_patterns("ray_results", GENERATOR_DIR))
    # The fixture's collection skipped the stage driver: record it as `wgen collect` would.
    write_json(
        out / "weights" / SUCCESS_FILE, {"concepts": 6, "record": stage_record(tiny(), "collect")}
    )
    settings = [*COLLECT, "train.epochs=50"]
    args = ["--preset", "tiny", "--out", str(out)] + [a for s in settings for a in ("--set", s)]
    code, output = interrupt_wgen(
        ["train", *args], ray_local, lambda line: "train: epoch 1/50" in line, timeout=180
    )  # after the first epoch: a checkpoint to resume from exists
    assert code == 130, output[-3000:]
    assert "interrupted; finished stages are kept, re-run the same command to resume" in output
    assert not (out / GENERATOR_DIR).exists()
    assert not (out / LOCK_FILE).exists()  # released before the exit that skips finalisation


def recorded_copy(weights_run: Path, tmp_path: Path) -> Path:
    """A copy of the weights run whose collection is recorded as `wgen collect` records it:
    the fixture's collection skipped the stage driver."""
    out = tmp_path / "run"
    shutil.copytree(weights_run, out, ignore=shutil.ignore_patterns("ray_results", GENERATOR_DIR))
    record = {"concepts": 6, "record": stage_record(tiny(), "collect")}
    write_json(out / "weights" / SUCCESS_FILE, {**record, "files": stage_files(out, "collect")})
    return out


TRAIN_ARGS = ["--preset", "tiny", *[a for s in COLLECT for a in ("--set", s)]]


@pytest.mark.parametrize(
    ("damaged", "remake"),
    [
        (lambda out: WeightStore(out).parquet_files()[0], "wgen collect --preset tiny"),
        (lambda out: out / "weights" / "_manifest.json", "wgen collect --preset tiny"),
    ],
    ids=["truncated weight parquet", "broken manifest"],
)
def test_train_refuses_a_damaged_weight_file_in_one_line(
    ray_local, weights_run, tmp_path, damaged, remake
):
    out = recorded_copy(weights_run, tmp_path)
    path = damaged(out)
    if path.suffix == ".json":
        path.write_text(path.read_text().replace('"', "'", 1))  # same size, no longer JSON
    else:
        truncate(path)
    line = refused_naming(["train", *TRAIN_ARGS, "--out", str(out)], path, remake, ray_local)
    assert "damaged" in line and "--out " + str(out) in line
    assert not (out / GENERATOR_DIR).exists() and not (out / LOCK_FILE).exists()
