"""The tune stage on the tiny preset, on the shared local Ray: a 4-trial search (2 b × 2 d)
is interrupted after its first finished trial (Ctrl+C to `python -m rayjobs.tune`), resumed
by running it again, and must then have written every output without re-running a
finished trial; `wgen train --from-tune` reads the best trial back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.e2e.interrupt import popen_interruptible
from tests.e2e.weights import collect_without_ray
from wgen.config import load_config
from wgen.core.runtime import read_json
from wgen.data.pairs import run_pairs
from wgen.tune.results import best_overrides
from wgen.tune.search import run_tune
from wgen.tune.trial import read_trial_events

# The first test also builds the weights and runs the search (module fixture).
pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
# Six concepts (4 train, 2 val) that converge; two epochs, the score after each, so ASHA
# has a rung to stop trials at. The tiny preset's space is b ∈ [16, 32] × d ∈ [8, 16].
SEARCH = [
    "collect.max_concepts=6",
    "collect.max_steps=200",
    "train.epochs=2",
    "train.quality_every=1",
    "tune.max_concurrent_trials=2",
    "tune.latency_repeats=2",
]


def interrupt_after_first_trial(out: Path, address: str) -> tuple[list[str], str]:
    """Run the search as a job and Ctrl+C it once a trial has finished; returns the ids of
    the trials it reported finished, and its output."""
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "rayjobs.tune", "--preset", "tiny", "--out", str(out)]
    for item in SEARCH:
        command += ["--set", item]
    job = popen_interruptible(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    finished: list[str] = []

    def read() -> None:
        for line in job.stdout:
            lines.append(line)
            if line.startswith("tune: trial ") and "best so far" in line:
                finished.append(line.split()[3])
                if len(finished) == 1:
                    job.send_signal(signal.SIGINT)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        job.wait(timeout=600)
    finally:
        if job.poll() is None:  # a hung job must not outlive the test
            job.kill()
    reader.join(timeout=10)
    return finished, "".join(lines)


@pytest.fixture(scope="module")
def searched(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune_run")
    run_pairs(load_config("tiny", SEARCH), out)
    collect_without_ray(load_config("tiny", SEARCH), out)
    address = ray_local.get_runtime_context().gcs_address
    started = time.perf_counter()
    finished, output = interrupt_after_first_trial(out, address)
    interrupted_at = time.time()
    assert "search interrupted" in output, output[-3000:]
    assert finished, output[-3000:]
    summary = run_tune(load_config("tiny", SEARCH), out, overrides=SEARCH)
    print(f"search: interrupted + resumed in {time.perf_counter() - started:.0f} s")
    return out, finished, interrupted_at, summary


def test_a_search_writes_every_output(searched):
    out, _, _, summary = searched
    tune_dir = out / "tune"
    for name in ("results.csv", "report.md", "score_vs_b.png", "latency_vs_b.png", "best.json"):
        assert (tune_dir / name).exists(), name
    results = pd.read_csv(tune_dir / "results.csv")
    assert len(results) == 4
    for column in ("b", "d", "lr", "score", "val_loss", "iterations", "status", "seconds"):
        assert column in results.columns, column
    assert sorted(zip(results["b"], results["d"], strict=True)) == [
        (16, 8), (16, 16), (32, 8), (32, 16)
    ]  # fmt: skip
    assert set(results["status"]) <= {"completed", "stopped early"}, results
    assert results["score"].notna().all() and results["latency_ms"].notna().all()
    assert list(results["score"]) == sorted(results["score"]), "best (lowest L1) first"
    assert (results["iterations"] >= 1).all() and (results["iterations"] <= 2).all()
    assert summary["iterations_full"] == 8 and summary["sessions"] == 2
    report = (tune_dir / "report.md").read_text()
    assert "best vs worst" in report and "trial-iterations" in report


def test_an_interrupted_search_resumes_without_rerunning_finished_trials(searched):
    out, finished, interrupted_at, _ = searched
    events = read_trial_events(out / "tune")
    resumed = {
        e["trial_id"] for e in events if e["event"] == "start" and e["time"] > interrupted_at
    }
    assert resumed, "the second run started the remaining trials"
    assert not resumed & set(finished), f"finished trials {finished} ran again"
    starts = [e["trial_id"] for e in events if e["event"] == "start"]
    assert set(starts) == set(pd.read_csv(out / "tune" / "results.csv")["trial_id"])


def test_train_from_tune_rebuilds_the_best_trial_config(searched):
    out = searched[0]
    best = read_json(out / "tune" / "best.json")
    preset, overrides = best_overrides(out)
    config = load_config(preset, overrides)
    assert config.denoiser.block_size == best["params"]["denoiser.block_size"]
    assert config.denoiser.index_dim == best["params"]["denoiser.index_dim"]
    assert config.train.epochs == 2 and config.collect.max_concepts == 6, "the search's --set"


def test_a_finished_search_is_skipped_and_another_search_is_refused(searched):
    out = searched[0]
    started = time.perf_counter()
    run_tune(load_config("tiny", SEARCH), out, overrides=SEARCH)
    assert time.perf_counter() - started < 5
    other = load_config("tiny", [*SEARCH, "tune.space={denoiser.block_size: [8, 16]}"])
    with pytest.raises(ValueError, match="other settings"):
        run_tune(other, out)
