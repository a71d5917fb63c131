"""`wgen distill` on the tiny preset, on the shared local Ray: a guided teacher, the
w-student and one progressive round as Ray Train runs, their generator folders loaded by
`wgen generate --guidance`, and a second command that skips the finished rounds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.e2e.interrupt import interrupt_wgen
from tests.e2e.trainrun import registered_epoch
from tests.e2e.weights import collect_without_ray
from wgen.cli import app
from wgen.config import load_config
from wgen.core.runfolder import LOCK_FILE
from wgen.core.runtime import read_json
from wgen.data.pairs import CONCEPTS_FILE, load_concepts, run_pairs
from wgen.distill.stage import DISTILL_DIR, ROUNDS_FILE
from wgen.generator.checkpoint import WeightGenerator
from wgen.generator.fit import run_train

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]  # a loaded 2-core machine: 580 s seen

TEACHER = ["collect.max_concepts=6", "collect.max_steps=200", "denoiser.cond_drop=0.2"]


@pytest.fixture(scope="module")
def teacher_run(ray_local, tmp_path_factory) -> Path:
    """A run folder with a guided teacher (text dropout 0.2) of the tiny preset."""
    out = tmp_path_factory.mktemp("distill_run")
    config = load_config("tiny", TEACHER)
    run_pairs(config, out)
    collect_without_ray(config, out)
    run_train(config, out)
    return out


@pytest.fixture(scope="module")
def distilled(teacher_run) -> Path:
    out = teacher_run
    result = CliRunner().invoke(app, ["distill", "--preset", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_every_round_writes_a_generator_that_takes_w(distilled):
    rounds = read_json(distilled / DISTILL_DIR / ROUNDS_FILE)["rounds"]
    assert [r["round"] for r in rounds] == ["w", "steps-1"]
    assert all(r["job_seconds"] > 0 and r["epochs_trained"] == 1 for r in rounds)
    for name, steps in (("w", 2), ("steps-1", 1)):
        student = WeightGenerator.load(distilled / DISTILL_DIR / name)
        assert student.guidance_input and student.config.generate.steps == steps
        assert student.info["distill"]["round"] == name
    one = WeightGenerator.load(distilled / DISTILL_DIR / "steps-1")
    assert one.config.generate.single_step_t == one.config.denoiser.train_timesteps - 1


def test_generate_loads_a_student_with_guidance(distilled, tmp_path):
    concept = next(c for c in load_concepts(distilled / CONCEPTS_FILE) if c.split == "heldout")
    adapter = tmp_path / "adapter"
    result = CliRunner().invoke(
        app,
        [
            "generate", "--generator", str(distilled / DISTILL_DIR / "steps-1"),
            "--concept", concept.text, "--out", str(adapter), "--guidance", "1.5",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "guidance w = 1.5 (w as the student's input)" in result.output
    assert (adapter / "adapter_config.json").exists()


def test_a_second_command_skips_the_finished_rounds(distilled):
    before = read_json(distilled / DISTILL_DIR / ROUNDS_FILE)["rounds"]
    result = CliRunner().invoke(app, ["distill", "--preset", "tiny", "--out", str(distilled)])
    assert result.exit_code == 0, result.output
    assert result.output.count("is complete") == 2
    after = read_json(distilled / DISTILL_DIR / ROUNDS_FILE)["rounds"]
    assert [r["job_seconds"] for r in after] == [r["job_seconds"] for r in before]


def test_ctrl_c_keeps_the_round_and_the_next_command_resumes_it(ray_local, teacher_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(teacher_run, out, ignore=shutil.ignore_patterns(DISTILL_DIR))
    args = ["distill", "--preset", "tiny", "--out", str(out)]
    code, output = interrupt_wgen(
        [*args, "--set", "distill.epochs=50"], ray_local, lambda line: "epoch 3/50" in line, 180
    )  # epochs 1-2 reported: the controller has registered a checkpoint to resume from
    assert code == 130, output[-3000:]
    assert "interrupted; finished stages are kept, re-run the same command to resume" in output
    assert not (out / DISTILL_DIR / "w").exists() and not (out / LOCK_FILE).exists()
    run_dir = next((out / DISTILL_DIR / "ray_results").glob("distill-w-*"))
    resumed = registered_epoch(run_dir)
    assert resumed >= 1
    kept = {
        read_json(c / "generator.json")["info"]["epoch"]: c
        for c in run_dir.glob("checkpoint_*")
        if c.is_dir()
    }
    before = read_json(kept[resumed] / "generator.json")["info"]["history"]
    result = CliRunner().invoke(app, [*args, "--set", f"distill.epochs={resumed + 1}"])
    assert result.exit_code == 0, result.output
    history = WeightGenerator.load(out / DISTILL_DIR / "w").info["history"]
    assert [m["epoch"] for m in history] == list(range(1, resumed + 2))
    assert history[:resumed] == before[:resumed], "the epochs before were resumed, not retrained"


def test_an_unguided_distillation_is_one_progressive_round(ray_local, teacher_run, tmp_path):
    """w_max = 0 (what `wgen demo` runs on its generator, trained without text dropout): no
    stage 1, the teacher's 2 DDIM steps distilled into one."""
    out = tmp_path / "run"
    shutil.copytree(teacher_run, out, ignore=shutil.ignore_patterns(DISTILL_DIR))
    sets = ["distill.w_max=0", "distill.start_steps=2"]
    args = ["distill", "--preset", "tiny", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, *[x for s in sets for x in ("--set", s)]])
    assert result.exit_code == 0, result.output
    rounds = read_json(out / DISTILL_DIR / ROUNDS_FILE)["rounds"]
    assert [(r["round"], r["w_range"]) for r in rounds] == [("steps-1", [0.0, 0.0])]
    assert rounds[0]["teacher"] == str(out / "generator")
    assert not (out / DISTILL_DIR / "w").exists()
    student = WeightGenerator.load(out / DISTILL_DIR / "steps-1")
    assert student.config.generate.steps == 1
    state, _ = student.generate("posterize the image", seed=0)
    assert state and all(torch.isfinite(v).all() for v in state.values())
