"""Bad inputs to `wgen distill` and `wgen generate --guidance`: one line naming the key or
folder, exit 2, before Ray starts; and the rounds a start step count makes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wgen.cli import app
from wgen.config import load_config
from wgen.core.runtime import write_json
from wgen.distill.fit import Round
from wgen.distill.pdiff import MODEL_FILES, pdiff_rounds
from wgen.distill.stage import distill_rounds, prepare_distill, student_config
from wgen.generator.checkpoint import FORMAT_VERSION, GENERATOR_FILES, INFO_FILE


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def first_error_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("error:"))


def teacher_folder(folder: Path, cond_drop: float) -> Path:
    """A generator folder with every file it must hold (the checks read only its config)."""
    for name in GENERATOR_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("")
    load_config("tiny", [f"denoiser.cond_drop={cond_drop}"]).save(folder / "config.yaml")
    write_json(folder / INFO_FILE, {"format_version": FORMAT_VERSION})
    return folder


@pytest.fixture
def no_ray():
    import ray

    was = ray.is_initialized()
    yield
    assert ray.is_initialized() == was, "a bad input must fail before Ray starts"


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["distill.w_min=2", "distill.w_max=1"], "distill.w_max=1.0: must be at least"),
        (["distill.start_steps=6"], "distill.start_steps=6: must be a power of two"),
        (["distill.start_steps=0"], "distill.start_steps=0: must be a power of two"),
        (["distill.w_min=-1"], "distill.w_min=-1.0"),
        (["distill.batch_size=33", "train.workers=2"], "distill.batch_size=33"),
        (["distill.start_steps=64"], "denoiser.train_timesteps=100"),
        (["distill.w_max=0", "distill.start_steps=1"], "distill.start_steps=1"),
    ],
)
def test_bad_ranges_fail_in_one_line_before_ray(tmp_path, no_ray, sets, expected):
    args = ["distill", "--preset", "tiny", "--out", str(tmp_path / "run")]
    result = invoke(*args, *[x for s in sets for x in ("--set", s)])
    assert result.exit_code == 2, result.output
    assert expected in first_error_line(result.output)


def test_a_teacher_trained_without_text_dropout_is_refused(tmp_path, no_ray):
    out = tmp_path / "run"
    teacher_folder(out / "generator", cond_drop=0.0)
    result = invoke("distill", "--preset", "tiny", "--out", str(out))
    assert result.exit_code == 2, result.output
    line = first_error_line(result.output)
    assert "denoiser.cond_drop=0" in line and "wgen train --set denoiser.cond_drop=0.1" in line


def test_an_unguided_distillation_takes_a_teacher_without_text_dropout(tmp_path, no_ray):
    out = tmp_path / "run"
    teacher_folder(out / "generator", cond_drop=0.0)
    config = load_config("tiny", ["distill.w_max=0"])
    teacher, teacher_config = prepare_distill(config, out)
    assert teacher == out / "generator" and teacher_config.denoiser.cond_drop == 0.0


def test_a_missing_teacher_names_the_folder_and_the_command(tmp_path, no_ray):
    result = invoke("distill", "--preset", "tiny", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    line = first_error_line(result.output)
    assert "generator" in line and "wgen train" in line


def test_another_target_is_refused(tmp_path, no_ray):
    result = invoke("distill", "--preset", "tiny", "--out", str(tmp_path), "--target", "unet")
    line = first_error_line(result.output)
    assert result.exit_code == 2 and "distill.target" in line and "pdiff" in line


def pdiff_model_folder(out: Path, **values) -> Path:
    """A p-diff model folder with every file it must hold (the checks read only its config)."""
    folder = out / "pdiff" / "convnet" / "model"
    folder.mkdir(parents=True)
    for name in MODEL_FILES:
        (folder / name).write_text("")
    pdiff = dataclasses.replace(load_config("tiny").pdiff, **values)
    write_json(folder / "info.json", {"pdiff": dataclasses.asdict(pdiff)})
    return folder


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["distill.pdiff_steps=6"], "distill.pdiff_steps=6: must be a power of two"),
        (["distill.pdiff_steps=0"], "distill.pdiff_steps=0: must be a power of two"),
        (["distill.pdiff_epochs=0"], "distill.pdiff_epochs=0"),
        (["distill.pdiff_steps=128"], "pdiff.train_timesteps=100, fewer than"),
        (["pdiff.workers=3"], "pdiff.train_batch=4 must divide by pdiff.workers=3"),
        (["pdiff.settings=[convnet,mlp]"], "no p-diff model here"),
    ],
)
def test_pdiff_target_bad_ranges_fail_in_one_line_before_ray(tmp_path, no_ray, sets, expected):
    out = tmp_path / "run"
    pdiff_model_folder(out)
    args = ["distill", "--preset", "tiny", "--out", str(out), "--target", "pdiff"]
    base = ["pdiff.settings=[convnet]", "distill.pdiff_steps=4"]
    result = invoke(*args, *[x for s in (*base, *sets) for x in ("--set", s)])
    assert result.exit_code == 2, result.output
    assert expected in first_error_line(result.output)


def test_pdiff_target_without_a_pdiff_run_names_the_folder_and_the_command(tmp_path, no_ray):
    out = tmp_path / "run"
    result = invoke("distill", "--preset", "tiny", "--out", str(out), "--target", "pdiff")
    assert result.exit_code == 2
    line = first_error_line(result.output)
    assert "pdiff/convnet/model" in line and f"wgen pdiff --out {out}" in line


def test_pdiff_rounds_halve_the_teachers_steps_down_to_one():
    assert pdiff_rounds(8) == [Round(f"steps-{n}", n, True) for n in (4, 2, 1)]
    assert pdiff_rounds(1) == []
    with pytest.raises(ValueError, match="power of two"):
        pdiff_rounds(12)


@pytest.mark.parametrize("guidance", ["-1", "nan"])
def test_generate_refuses_a_negative_guidance_weight(tmp_path, no_ray, guidance):
    teacher = teacher_folder(tmp_path / "generator", cond_drop=0.1)
    args = ["--generator", str(teacher), "--concept", "sepia", "--out", str(tmp_path / "a")]
    result = invoke("generate", *args, "--guidance", guidance)
    assert result.exit_code == 2 and "--guidance" in first_error_line(result.output)


def test_rounds_halve_the_steps_down_to_one():
    assert distill_rounds(4) == [
        Round("w", 4, False),
        Round("steps-2", 2, True),
        Round("steps-1", 1, True),
    ]
    assert distill_rounds(1) == [Round("w", 1, False)]
    # unguided: stage 1 would copy its teacher, so the rounds are progressive alone
    assert distill_rounds(2, with_guidance=False) == [Round("steps-1", 1, True)]


def test_a_one_step_student_samples_from_the_last_timestep():
    teacher = load_config("tiny", ["denoiser.cond_drop=0.1", "generate.guidance=2"])
    command = load_config("tiny", ["train.threads=2"])
    one = student_config(teacher, command, Round("steps-1", 1, True))
    assert one.generate.steps == 1 and one.generate.single_step_t == 99
    assert one.generate.guidance == 0.0 and one.train.threads == 2
    w = student_config(teacher, command, Round("w", 2, False))
    assert w.generate.single_step_t == teacher.generate.single_step_t and w.generate.steps == 2


def test_pdiff_refuses_a_sampler_folder_without_a_model_before_ray(tmp_path, no_ray):
    args = ["pdiff", "--preset", "tiny", "--out", str(tmp_path / "run")]
    sets = [
        "--set",
        "pdiff.settings=[convnet]",
        "--set",
        f"pdiff.sampler_dir={tmp_path}/{{setting}}",
    ]
    result = invoke(*args, *sets)
    assert result.exit_code == 2, result.output
    line = first_error_line(result.output)
    assert "pdiff.sampler_dir=" in line and f"{tmp_path}/convnet holds no p-diff model" in line
