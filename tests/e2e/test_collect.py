"""The collection stage on the tiny preset, on the shared local Ray: output, resume, faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wgen.collect.stage import run_collect, select_concepts
from wgen.config import load_config
from wgen.data.pairs import run_pairs
from wgen.gan.lora import load_trainable_state_dict
from wgen.gan.training import BaseGAN, lora_generator
from wgen.models.base import BASE_DIR
from wgen.models.gan import build_generator, fingerprint
from wgen.weights.format import WeightFormatError
from wgen.weights.store import WeightStore, checkpoint_state

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

# Longer per-concept training than the tiny preset, so a kill lands mid-training.
SLOW = ["collect.max_steps=300", "collect.patience=30", "collect.max_concepts=4"]


@pytest.fixture(scope="module")
def pairs_run(ray_local, tmp_path_factory) -> Path:
    """One tiny pairs folder shared by the collection tests (each copies what it changes)."""
    out = tmp_path_factory.mktemp("pairs_run")
    run_pairs(load_config("tiny"), out)
    return out


def fresh_run(pairs_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    for name in ("pairs", "concepts.jsonl"):
        os.symlink(pairs_run / name, out / name)
    return out


def selected(out: Path, config) -> list[str]:
    return select_concepts(out, config.collect)


@pytest.fixture(scope="module")
def collected(pairs_run, tmp_path_factory) -> tuple[Path, dict]:
    """One finished tiny collection shared by the tests that only read it."""
    out = fresh_run(pairs_run, tmp_path_factory.mktemp("collected"))
    return out, run_collect(load_config("tiny"), out)


def test_collect_writes_k_checkpoints_per_concept_and_resumes(collected):
    out, summary = collected
    config = load_config("tiny")
    store = WeightStore(out)
    ids = selected(out, config)
    assert summary["selected"] == len(ids) == 4
    assert set(store.statuses()) == set(ids)
    frame = store.read()
    converged = [c for c, s in store.statuses().items() if s["status"] == "converged"]
    assert sorted(frame["concept_id"].unique()) == sorted(converged)
    assert frame.groupby("concept_id").size().eq(config.collect.k_checkpoints).all()
    assert {"train", "val"} >= set(frame["split"])

    # Every checkpoint loads back into the base generator and the LoRA is not the init.
    base = BaseGAN.load(out / BASE_DIR)
    manifest = store.manifest()
    state = checkpoint_state(frame.iloc[0], manifest, base.fingerprint)
    model = lora_generator(base, config.lora)
    load_trainable_state_dict(model, state)
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)

    # A re-run trains nothing and rewrites nothing.
    mtimes = {
        p: p.stat().st_mtime_ns
        for p in store.folder.rglob("*")
        if p.is_file() and p.name != "_SUCCESS.json"
    }
    again = run_collect(config, out)
    assert again["converged"] == summary["converged"]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_weights_refuse_a_base_with_another_fingerprint(collected):
    out, _ = collected
    config = load_config("tiny")
    store = WeightStore(out)
    other = fingerprint(build_generator(config.gan.size, seed=123), config.gan.size)
    with pytest.raises(WeightFormatError, match=other):
        checkpoint_state(store.read().iloc[0], store.manifest(), other)


def test_a_killed_training_actor_is_retried_and_nothing_is_duplicated(pairs_run, tmp_path):
    out = fresh_run(pairs_run, tmp_path)
    config = load_config("tiny", SLOW)
    store = WeightStore(out)
    errors: list[BaseException] = []

    def collect() -> None:
        try:
            run_collect(config, out)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    thread = threading.Thread(target=collect)
    thread.start()
    victim = None
    deadline = time.time() + 180
    while victim is None and time.time() < deadline:
        for path in store.attempts_dir.glob("*.json") if store.attempts_dir.exists() else []:
            concept_id = path.stem
            if store.status(concept_id) is None:
                victim = (concept_id, store.attempts(concept_id)[-1]["pid"])
                break
        time.sleep(0.2)
    assert victim is not None, "no concept started training"
    # Its attempt is on disk: a kill from here on, in or before the training loop, is a
    # death mid-concept, which is what must be retried.
    os.kill(victim[1], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors

    ids = selected(out, config)
    statuses = store.statuses()
    assert set(statuses) == set(ids), "every concept is recorded exactly once"
    assert len(store.attempts(victim[0])) == 2, "the killed concept was retried once"
    assert statuses[victim[0]]["status"] in ("converged", "not_converged")
    frame = store.read(with_vectors=False)
    assert not frame.duplicated(["concept_id", "checkpoint"]).any()


def test_an_interrupted_run_resumes_without_duplicates(ray_local, pairs_run, tmp_path):
    out = fresh_run(pairs_run, tmp_path)
    config_args = ["--preset", "tiny", "--out", str(out)] + [a for s in SLOW for a in ("--set", s)]
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    log = tmp_path / "job.log"
    with log.open("wb") as sink:
        job = subprocess.Popen(
            [sys.executable, "-m", "rayjobs.collect", *config_args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    store = WeightStore(out)
    start = time.time()
    while not store.statuses() and time.time() < start + 240 and job.poll() is None:
        time.sleep(0.2)
    exit_code = job.poll()
    os.killpg(job.pid, signal.SIGKILL)  # the whole job, driver first
    job.wait()
    finished_before = {
        c: (store.status_dir / f"{c}.json").stat().st_mtime_ns for c in store.statuses()
    }
    assert finished_before, (
        f"the job finished no concept in {time.time() - start:.0f} s before the kill "
        f"(exit code {exit_code}); its output ends:\n{log.read_text()[-3000:]}"
    )

    config = load_config("tiny", SLOW)
    run_collect(config, out)
    ids = selected(out, config)
    assert set(store.statuses()) == set(ids)
    for concept_id, mtime in finished_before.items():
        assert (store.status_dir / f"{concept_id}.json").stat().st_mtime_ns == mtime, (
            "finished work was redone"
        )
    frame = store.read(with_vectors=False)
    assert not frame.duplicated(["concept_id", "checkpoint"]).any()
