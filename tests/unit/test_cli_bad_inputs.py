"""Bad inputs a user gives the command line: one line naming the key or file, the right exit
code, nothing already in the run folder changed, and no Ray started (all fail before it)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from wgen.cli import app
from wgen.config import load_config
from wgen.core.runfolder import LOCK_FILE, stage_record
from wgen.core.runtime import SUCCESS_FILE, write_json
from wgen.gan.metrics import INCEPTION_ENV
from wgen.generator.checkpoint import FORMAT_VERSION


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def run(tmp_path) -> Path:
    """A run folder that already holds something of value."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    return out


def finished_pairs(out: Path, preset: str = "tiny") -> None:
    """A pairs folder that says it is finished, made with ``preset`` (no Parquet needed: every
    command below stops before reading it)."""
    write_json(
        out / "pairs" / SUCCESS_FILE,
        {"pairs": 1, "record": stage_record(load_config(preset), "pairs")},
    )


def fake_generator(folder: Path) -> Path:
    """A folder with the kinds of files a generator folder holds, all readable."""
    folder.mkdir(parents=True)
    load_config("tiny").save(folder / "config.yaml")
    save_file({"w": torch.zeros(64)}, str(folder / "denoiser.safetensors"))
    write_json(folder / "generator.json", {"format_version": FORMAT_VERSION})
    return folder


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def first_error_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(("error:", "interrupted")))


# (name, command after the run folder is prepared, exit code, text the first line holds)
CONFIG_CASES = [
    ("unknown preset", ["pairs", "--preset", "huge"], 2, "unknown preset 'huge'"),
    ("wrong type", ["pairs", "--set", "data.seed=abc"], 2, "data.seed: expected an integer"),
    ("unknown key", ["pairs", "--set", "collect.actorz=2"], 2, "collect.actorz"),
    ("no '='", ["pairs", "--set", "collect.actors"], 2, "section.key=value"),
    ("misspelt editor", ["pairs", "--set", "data.editor=procedual"], 2, "data.editor='procedual'"),
    (
        "instruct-pix2pix without a model folder",
        ["pairs", "--set", "data.editor=instruct-pix2pix"],
        2,
        "data.editor_model_dir=None",
    ),
    (
        "instruct-pix2pix model folder missing",
        [
            "pairs",
            "--set",
            "data.editor=instruct-pix2pix",
            "--set",
            "data.editor_model_dir=/no/such",
        ],
        2,
        "data.editor_model_dir: InstructPix2Pix model folder /no/such does not exist",
    ),
    (
        "zero actors",
        ["collect", "--set", "collect.actors=0"],
        2,
        "collect.actors=0: must be at least 1",
    ),
    ("zero editor actors", ["pairs", "--set", "data.editor_actors=0"], 2, "data.editor_actors=0"),
    (
        "more pairs than crops",
        ["pairs", "--set", "data.pairs_per_concept=100000"],
        2,
        "data.pairs_per_concept=100000",
    ),
    ("impossible concept count", ["pairs", "--set", "data.n_train_concepts=100000"], 2, "at most"),
    (
        "no training pairs left",
        ["collect", "--set", "collect.eval_pairs=12"],
        2,
        "collect.eval_pairs=12: must be at least 1 and leave training pairs",
    ),
    ("unknown GAN size", ["collect", "--set", "gan.size=huge"], 2, "gan.size='huge'"),
    (
        "image size the GAN cannot halve",
        ["collect", "--set", "data.image_size=18"],
        2,
        "data.image_size=18",
    ),
    (
        "min_converged not a fraction",
        ["collect", "--set", "collect.min_converged=1.5"],
        2,
        "collect.min_converged=1.5",
    ),
    (
        "unknown feature extractor",
        ["collect", "--set", "collect.feature_extractor=vgg"],
        2,
        "collect.feature_extractor='vgg'",
    ),
    (
        "batch not divisible by workers",
        ["train", "--set", "train.workers=2", "--set", "train.batch_size=33"],
        2,
        "train.batch_size=33: the global batch must divide by train.workers=2",
    ),
    ("unknown denoiser size", ["train", "--set", "denoiser.size=huge"], 2, "denoiser.size='huge'"),
    (
        "negative block readout",
        ["train", "--set", "denoiser.block_readout=-1"],
        2,
        "denoiser.block_readout=-1: must be at least 0",
    ),
    (
        "unknown learning-rate schedule",
        ["train", "--set", "train.lr_schedule=linear"],
        2,
        "train.lr_schedule='linear': valid: constant, cosine",
    ),
    (
        "a learning curve point without concepts",
        ["train", "--set", "train.max_train_concepts=0"],
        2,
        "train.max_train_concepts=0: must be at least 1 (or none for every collected concept)",
    ),
    (
        "a negative share of the gain since the start",
        ["collect", "--set", "collect.gain_fraction=-0.1"],
        2,
        "collect.gain_fraction=-0.1: must be at least 0 (0 = no margin from the gain since the start)",
    ),
    (
        "a bench window shorter than one evaluation",
        ["bench", "--set", "bench.window_steps=2"],
        2,
        "bench.window_steps=2: must be at least bench.eval_every=5",
    ),
    (
        "selection pairs that leave nothing to train on",
        ["bench", "--set", "bench.selection_pairs=8"],
        2,
        "bench.selection_pairs=8: leaves 0 pairs to train on",
    ),
    (
        "a hyper schedule the generator does not know",
        ["bench", "--set", "bench.hyper_lr_schedule=linear"],
        2,
        "bench.hyper_lr_schedule='linear': one of constant, cosine, or none for the generator's",
    ),
    (
        "a clock the bench does not read",
        ["bench", "--set", "bench.clock=cpu"],
        2,
        "bench.clock='cpu': one of normalised, wall",
    ),
    (
        "a GPU asked for through the custom resources",
        ["train", "--set", "train.worker_resources={GPU: 1}"],
        2,
        "train.worker_resources={'GPU': 1}: GPU has its own field: train.cpus_per_worker or train.use_gpu",
    ),
    (
        "a custom resource amount that is not a positive number",
        ["train", "--set", "train.worker_resources={trainer: none}"],
        2,
        "the amount of trainer must be a number more than 0, e.g. {trainer: 1}",
    ),
    ("unknown exported epoch", ["train", "--set", "train.export=first"], 2, "train.export='first'"),
    ("unreadable list", ["pdiff", "--set", "pdiff.settings=[mlp"], 2, "write a,b or [a, b]"),
    (
        "single-step t beyond the schedule",
        ["train", "--set", "generate.single_step_t=100"],
        2,
        "generate.single_step_t=100",
    ),
    (
        "missing images folder",
        ["pairs", "--images", "/no/such/photos"],
        2,
        "data.images_dir: images folder /no/such/photos does not exist",
    ),
]


@pytest.mark.parametrize(
    ("command", "code", "expected"),
    [case[1:] for case in CONFIG_CASES],
    ids=[case[0] for case in CONFIG_CASES],
)
def test_bad_config_fails_in_one_line_before_ray_and_changes_nothing(run, command, code, expected):
    before = snapshot(run)
    result = (
        invoke(*command, "--preset", "tiny", "--out", str(run))
        if "--preset" not in command
        else invoke(*command, "--out", str(run))
    )
    assert result.exit_code == code, result.output
    assert expected in first_error_line(result.output)
    assert "Traceback" not in result.output
    assert snapshot(run) == before  # no config.<stage>.yaml written, nothing touched


def test_inception_without_its_weights_names_where_it_looked(run, tmp_path, monkeypatch):
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "empty"))
    result = invoke(
        "collect",
        "--preset",
        "tiny",
        "--set",
        "collect.feature_extractor=inception",
        "--out",
        str(run),
    )
    assert result.exit_code == 2
    line = first_error_line(result.output)
    assert "collect.feature_extractor=inception" in line and str(tmp_path / "empty") in line


def test_an_empty_images_folder_is_named(run, tmp_path):
    (tmp_path / "photos").mkdir()
    result = invoke(
        "pairs", "--preset", "tiny", "--images", str(tmp_path / "photos"), "--out", str(run)
    )
    assert result.exit_code == 2
    assert "has no JPEG or PNG files" in first_error_line(result.output)


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_out_that_is_a_file_or_under_one_is_refused(tmp_path, where):
    file = tmp_path / "a_file"
    file.write_text("precious\n")
    out = file if where == "file" else file / "run"
    result = invoke("pairs", "--preset", "tiny", "--out", str(out))
    assert result.exit_code == 2
    line = first_error_line(result.output)
    assert f"--out {out}" in line and "file" in line
    assert file.read_text() == "precious\n"


def test_out_that_cannot_be_written_is_refused():
    result = invoke("pairs", "--preset", "tiny", "--out", "/proc/wgen-run")
    assert result.exit_code == 2
    assert "--out /proc/wgen-run" in first_error_line(result.output)


# -- run folders that were made otherwise ------------------------------------------------


def test_stage_without_its_input_names_the_command_with_the_preset(run):
    result = invoke("collect", "--preset", "tiny", "--set", "collect.actors=1", "--out", str(run))
    assert result.exit_code == 2
    line = first_error_line(result.output)
    assert f"`wgen pairs --preset tiny --set collect.actors=1 --out {run}`" in line
    assert not (run / LOCK_FILE).exists()


def test_collect_on_pairs_of_another_preset_names_the_preset_and_fields(run):
    finished_pairs(run, "tiny")
    before = snapshot(run)
    result = invoke("collect", "--out", str(run))  # the default preset: demo
    assert result.exit_code == 2
    line = first_error_line(result.output)
    assert "made with --preset tiny, this command uses --preset demo" in line
    assert "data.image_size: 16 → 32" in line and "use --preset tiny" in line
    assert snapshot(run) == before


def test_a_finished_stage_with_the_same_settings_is_skipped_and_rewrites_nothing(run):
    finished_pairs(run, "tiny")
    before = snapshot(run)
    result = invoke("pairs", "--preset", "tiny", "--out", str(run))
    assert result.exit_code == 0, result.output
    assert "skipping" in result.output
    assert snapshot(run) == before


def test_a_finished_stage_with_other_settings_is_refused_without_force(run):
    finished_pairs(run, "tiny")
    before = snapshot(run)
    result = invoke("pairs", "--preset", "tiny", "--set", "data.seed=3", "--out", str(run))
    assert result.exit_code == 2
    line = first_error_line(result.output)
    assert "other settings" in line and "data.seed: 0 → 3" in line and "--force" in line
    assert snapshot(run) == before


def test_train_on_weights_of_another_preset_is_refused(run):
    write_json(
        run / "weights" / SUCCESS_FILE,
        {"converged_share": 1.0, "record": stage_record(load_config("tiny"), "collect")},
    )
    finished_pairs(run, "tiny")
    before = snapshot(run)
    result = invoke("train", "--preset", "demo", "--out", str(run))
    assert result.exit_code == 2
    assert "made with --preset tiny" in first_error_line(result.output)
    assert snapshot(run) == before


def test_a_second_writer_is_refused_by_the_lock(run):
    write_json(
        run / LOCK_FILE,
        {"pid": os.getpid(), "host": os.uname().nodename, "command": "wgen collect"},
    )
    before = snapshot(run)
    result = invoke("pairs", "--preset", "tiny", "--out", str(run))
    assert result.exit_code == 2
    line = first_error_line(result.output)
    assert f"in use by pid {os.getpid()}" in line and "wgen collect" in line
    assert snapshot(run) == before


def test_a_stale_lock_is_taken_over(run):
    write_json(run / LOCK_FILE, {"pid": 2**22 + 12345, "host": os.uname().nodename})
    result = invoke("collect", "--preset", "tiny", "--out", str(run))
    assert "taking over the stale lock" in result.output
    assert "wgen pairs --preset tiny" in first_error_line(result.output)  # it went on
    assert not (run / LOCK_FILE).exists()  # and released the lock


# -- files other commands wrote ----------------------------------------------------------


def test_missing_generator_folder_says_which_command_makes_it(tmp_path):
    result = invoke(
        "generate",
        "--generator",
        str(tmp_path / "nope"),
        "--concept",
        "sepia",
        "--out",
        str(tmp_path / "a"),
    )
    assert result.exit_code == 2
    line = first_error_line(result.output)
    assert "does not exist" in line and "wgen train" in line


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("denoiser.safetensors", lambda p: p.write_bytes(p.read_bytes()[:-40])),  # truncated
        ("denoiser.safetensors", lambda p: p.write_bytes(os.urandom(300))),  # random bytes
        ("generator.json", lambda p: p.write_text('{"format_version": ')),
        ("config.yaml", lambda p: p.write_text("data: [unclosed\n")),
        ("config.yaml", lambda p: p.write_text("data:\n  seeed: 1\n")),
        ("generator.json", lambda p: write_json(p, {"format_version": 1})),  # an older wgen's
    ],
    ids=[
        "truncated safetensors",
        "random safetensors",
        "broken json",
        "broken yaml",
        "unknown key in config",
        "older format",
    ],
)
def test_a_damaged_generator_file_is_named(tmp_path, name, damage):
    folder = fake_generator(tmp_path / "generator")
    damage(folder / name)
    result = invoke(
        "generate", "--generator", str(folder), "--concept", "sepia", "--out", str(tmp_path / "a")
    )
    assert result.exit_code == 2, result.output
    line = first_error_line(result.output)
    assert str(folder / name) in line and "wgen train" in line
    assert not (tmp_path / "a").exists()


def test_generate_does_not_overwrite_an_adapter_without_force(tmp_path):
    folder = fake_generator(tmp_path / "generator")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    result = invoke(
        "generate", "--generator", str(folder), "--concept", "sepia", "--out", str(adapter)
    )
    assert result.exit_code == 2
    assert "--force" in first_error_line(result.output)
    assert (adapter / "adapter_config.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("args", "expected"), [(["--steps", "0"], "--steps"), (["--concept", "  "], "--concept")]
)
def test_generate_arguments_are_checked_first(tmp_path, args, expected):
    base = [
        "generate",
        "--generator",
        str(tmp_path),
        "--concept",
        "sepia",
        "--out",
        str(tmp_path / "a"),
    ]
    result = invoke(*base, *args)
    assert result.exit_code == 2 and expected in first_error_line(result.output)


def test_apply_without_a_base_next_to_the_adapter_asks_for_base(tmp_path):
    (tmp_path / "adapter").mkdir()
    result = invoke(
        "apply",
        "--adapter",
        str(tmp_path / "adapter"),
        "--images",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    )
    assert result.exit_code == 2 and "--base" in first_error_line(result.output)


# -- bugs and interruptions ----------------------------------------------------------------


def test_a_bug_keeps_its_traceback_and_exits_1(run, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("a bug in wgen")

    monkeypatch.setattr("wgen.pipeline.run_stage", broken)
    result = invoke("pairs", "--preset", "tiny", "--out", str(run))
    assert result.exit_code == 1
    assert isinstance(result.exception, KeyError)
    assert not (run / LOCK_FILE).exists()


def test_ctrl_c_exits_130_with_what_is_kept(run, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("wgen.pipeline.run_stage", interrupted)
    result = invoke("pairs", "--preset", "tiny", "--out", str(run))
    assert result.exit_code == 130
    assert "re-run the same command to resume" in first_error_line(result.output)
    assert not (run / LOCK_FILE).exists()


def test_bad_inputs_table_has_at_least_twenty_cases():
    assert len(CONFIG_CASES) >= 20
    assert json.dumps([c[0] for c in CONFIG_CASES])


def test_a_generator_folder_missing_a_file_is_named(tmp_path):
    folder = fake_generator(tmp_path / "generator")  # readable, but lacks the codec, base, ...
    result = invoke(
        "generate", "--generator", str(folder), "--concept", "sepia", "--out", str(tmp_path / "a")
    )
    assert result.exit_code == 2, result.output
    line = first_error_line(result.output)
    assert str(folder) in line and "missing" in line and "wgen train" in line
