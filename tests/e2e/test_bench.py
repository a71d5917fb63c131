"""`wgen bench` on the tiny preset, on the shared local Ray: every method, results.json with
every field, bad concept files refused before Ray starts, and a partial bench resumed
without redoing its finished (concept, method, seed) runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.e2e.damaged import refused_naming, truncate
from tests.e2e.test_train import COLLECT, collect_without_ray, tiny
from wgen.bench.stage import BENCH_DIR, RUNS_DIR, heldout_mix
from wgen.cli import app
from wgen.core.runfolder import stage_record
from wgen.core.runtime import SUCCESS_FILE, write_json
from wgen.data.pairs import CONCEPTS_FILE, load_concepts, run_pairs
from wgen.gan.training import BaseGAN
from wgen.generator.checkpoint import WeightGenerator
from wgen.generator.dataset import row_vectors
from wgen.models.base import BASE_DIR, load_base_model
from wgen.models.denoiser import build_denoiser
from wgen.weights.blocks import BlockLayout
from wgen.weights.codec import BlockCodec
from wgen.weights.store import WeightStore

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

ARGS = ["--preset", "tiny", *[a for s in COLLECT for a in ("--set", s)]]
SUMMARY_KEYS = {
    "median_time_to_converge_s",
    "median_final_quality",
    "median_time_to_target_s",
    "median_steps_to_target",
    "median_quality_step0",
}


def untrained_generator(config, out: Path) -> Path:
    """A complete generator folder with an untrained denoiser: the bench only uses the
    generator's public interface (load + generate), which is what this tests; training it
    is test_train's (and costs a Ray Train start)."""
    store = WeightStore(out)
    manifest = store.manifest()
    lengths = manifest.group_lengths
    layout = BlockLayout.from_lengths(lengths, config.denoiser.block_size)
    rows = row_vectors(store.read(splits=["train"]), len(lengths))
    generator = WeightGenerator(
        config=config,
        denoiser=build_denoiser(config.denoiser, 384),
        codec=BlockCodec.fit(rows, layout, center=True),
        manifest=manifest,
        text_encoder="minilm",
        text_dim=384,
        base=load_base_model(out / BASE_DIR, config),
    )
    return generator.save(out / "generator")


@pytest.fixture(scope="module")
def run_folder(ray_local, tmp_path_factory) -> Path:
    """Pairs, six collected concepts (written as a finished collection) and a generator."""
    out = tmp_path_factory.mktemp("bench_run")
    config = tiny()
    run_pairs(config, out)
    collect_without_ray(config, out)
    write_json(WeightStore(out).folder / SUCCESS_FILE, {"record": stage_record(config, "collect")})
    untrained_generator(config, out)
    return out


@pytest.fixture(scope="module")
def benched(run_folder) -> Path:
    result = CliRunner().invoke(app, ["bench", *ARGS, "--out", str(run_folder)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return run_folder


def test_a_tiny_bench_runs_every_method_and_writes_every_field(benched):
    folder = benched / BENCH_DIR
    results = json.loads((folder / "results.json").read_text())
    assert results["quality_metric"] == {"name": "l1", "lower_is_better": True}
    # every method of the preset ran (the distilled ones need `wgen distill` first)
    assert set(results["summary"]) == set(tiny().bench.methods), "every method ran"
    for method, summary in results["summary"].items():
        assert SUMMARY_KEYS <= set(summary), method
        assert summary["median_quality_step0"] is not None
        assert summary["median_final_quality"] is not None
    # lora-zero's own converged quality is its target: it reaches it, by construction
    assert results["summary"]["lora-zero"]["reached_target"] >= 1
    assert results["oracles"] == ["nearest-edit"]
    assert results["hardware"]["cores"] and results["torch_threads"] >= 1
    assert results["feature_extractor"]
    assert results["complete"]
    heldout = [c for c in load_concepts(benched / CONCEPTS_FILE) if c.split == "heldout"]
    # one unseen combination and one unseen wording: both kinds of held-out concept
    assert sorted(results["concepts"]) == sorted(c.id for c in heldout_mix(heldout, 2))
    assert sorted(results["concept_kinds"].values()) == ["combination", "paraphrase"]
    heldout = [c.id for c in heldout]
    heldout = [c for c in heldout if c in results["concepts"]]
    run = results["per_concept"][heldout[0]]["runs"][0]
    # every run's record: enough to recompute any statistic from the records alone
    for key in ("method", "seed", "status", "time_to_converge_s", "steps", "best_step"):
        assert key in run, key
    assert {"reached_target", "time_to_target_s", "converged_test_quality"} <= set(run["metrics"])
    assert {"0", "5", "10"} == set(run["metrics"]["budgets"])
    assert run["history"][0]["step"] == 0 and "fd" in run["final"]
    assert {"l1", "test_l1"} <= set(run["history"][0])
    # the converged quality is the restored model's test score, the one at its best step
    at_best = next(h for h in run["history"] if h["step"] == run["best_step"])
    assert run["final"]["l1"] == pytest.approx(at_best["test_l1"], abs=1e-6)
    assert results["splits"] == {"selection_pairs": 3, "test_pairs": 4}
    assert results["baselines"]["paraphrases"] == 2  # the generator's train.paraphrases
    generated = results["per_concept"][heldout[0]]["methods"]["wgen-1"]
    assert generated["median_generation_s"] > 0
    assert generated["median_novelty_distance"] is not None
    report = (folder / "report.md").read_text()
    assert "never" in report or "| wgen-1 |" in report
    for name in ("speedups.png", "grid.png", f"quality_vs_time_{heldout[0]}.png"):
        assert (folder / "plots" / name).stat().st_size > 0, name


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("make it zorgly and purple\n", "does not know 'zorgly'"),
        ("\n  \n# only a comment\n", "lists no concept text"),
        (None, "is a training concept"),  # the first training concept's own text
    ],
    ids=["unknown-word", "empty", "training-concept"],
)
def test_a_bad_concepts_file_is_one_clear_line(run_folder, tmp_path, lines, message):
    if lines is None:
        train = next(c for c in load_concepts(run_folder / CONCEPTS_FILE) if c.split == "train")
        lines = train.text + "\n"
    concepts = tmp_path / "concepts.txt"
    concepts.write_text(lines)
    result = CliRunner().invoke(
        app, ["bench", *ARGS, "--out", str(run_folder), "--concepts", str(concepts)]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("name", "damage", "remake"),
    [
        (CONCEPTS_FILE, lambda p: p.write_text(p.read_text()[:-30]), "wgen pairs --preset tiny"),
        (f"{BASE_DIR}/generator.safetensors", truncate, "wgen collect --preset tiny"),
    ],
    ids=["broken concepts.jsonl", "truncated base generator"],
)
def test_bench_refuses_a_damaged_input_in_one_line(
    ray_local, run_folder, tmp_path, name, damage, remake
):
    out = tmp_path / "run"
    shutil.copytree(run_folder, out, ignore=shutil.ignore_patterns(BENCH_DIR))
    damage(out / name)
    line = refused_naming(["bench", *ARGS, "--out", str(out)], out / name, remake, ray_local)
    assert "damaged" in line and "--force" in line
    assert not (out / BENCH_DIR).exists()


@pytest.mark.parametrize(
    ("setting", "names"),
    [
        ("bench.paraphrases=7", ("bench.paraphrases=7", "train.paraphrases")),
        ("train.max_train_concepts=3", ("train.max_train_concepts=3", "every")),
    ],
    ids=["paraphrases", "training-subset"],
)
def test_baselines_fitted_on_other_data_than_the_generator_are_refused(run_folder, setting, names):
    before = sorted(p.name for p in (run_folder / BENCH_DIR / RUNS_DIR).rglob("*"))
    result = CliRunner().invoke(app, ["bench", *ARGS, "--out", str(run_folder), "--set", setting])
    assert result.exit_code == 2, result.output
    assert all(name in result.output for name in names), result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert sorted(p.name for p in (run_folder / BENCH_DIR / RUNS_DIR).rglob("*")) == before


def test_an_unknown_method_is_refused_before_ray(run_folder):
    result = CliRunner().invoke(
        app, ["bench", *ARGS, "--out", str(run_folder), "--methods", "mean,magic"]
    )
    assert result.exit_code == 2 and "unknown ['magic']" in result.output


def test_a_partial_bench_resumes_without_redoing_finished_runs(benched):
    runs = benched / BENCH_DIR / RUNS_DIR
    files = sorted(runs.glob("*/*.json"))
    lost = next(f for f in files if f.name == "mean__s0.json")
    lost.unlink()  # as if the bench had been stopped before this run finished
    before = {f: f.stat().st_mtime_ns for f in files if f != lost}
    result = CliRunner().invoke(app, ["bench", *ARGS, "--out", str(benched)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "1 to run" in result.output
    assert lost.exists(), "the missing run was made again"
    assert {f: f.stat().st_mtime_ns for f in before} == before, "finished runs were kept"


def user_photos(folder: Path, count: int = 3) -> Path:
    """A folder of the user's photos: PNGs of scikit-image's sample pictures."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "coffee", "chelsea")[:count]:
        Image.fromarray(getattr(data, name)()).resize((96, 96)).save(folder / f"{name}.png")
    return folder


def test_finetune_writes_an_adapter_of_the_base_gan_and_prints_its_curve(run_folder, tmp_path):
    from wgen.gan.lora import load_adapter

    photos, adapter = user_photos(tmp_path / "photos"), tmp_path / "adapter"
    args = ["finetune", "--generator", str(run_folder / "generator"), "--images", str(photos)]
    result = CliRunner().invoke(
        app, [*args, "--concept", "make it sepia-toned", "--out", str(adapter)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    # (in this test process transformers was imported before the CLI could switch its
    # weight-loading bar off, so a line may start with that bar; `wgen finetune` has none)
    lines = [
        line[line.index("finetune:") :]
        for line in result.output.splitlines()
        if "finetune:" in line
    ]
    assert "LoRA generated for 'make it sepia-toned'" in lines[0]
    assert any("step     0" in line and "held-back L1" in line for line in lines)
    # the verdict, then the line that says where the full-size preview of the photos went
    assert any(
        "converged at step" in line or "stopped without converging" in line for line in lines
    )
    assert "edited at their own size" in lines[-1]
    base = BaseGAN.load(run_folder / BASE_DIR)
    load_adapter(base.build_generator(), adapter, base.fingerprint)  # a peft adapter of it

    # an existing adapter is kept unless --force; a missing photo folder and a word the
    # editor does not know are one line each, before any work
    before = sorted(p.name for p in adapter.iterdir())
    again = CliRunner().invoke(
        app, [*args, "--concept", "make it sepia-toned", "--out", str(adapter)]
    )
    assert again.exit_code == 2 and "--force" in again.output
    assert sorted(p.name for p in adapter.iterdir()) == before
    missing = [*args[:3], "--images", str(tmp_path / "none")]
    for bad, message in (
        ([*missing, "--concept", "make it sepia-toned"], "does not exist"),
        ([*args, "--concept", "make it sparkle"], "sparkle"),
    ):
        out = CliRunner().invoke(app, [*bad, "--out", str(tmp_path / "other")])
        assert out.exit_code == 2 and message in out.output, out.output
        assert not (tmp_path / "other").exists()
