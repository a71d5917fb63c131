"""A run folder at a URI: the tiny `wgen pairs` + `wgen collect` with --out s3://... against a
local S3 server (moto, started and stopped here), then the same with a plain relative path.

Checks what is in the bucket (the pairs' shards, every concept's weights and status, the
stage records), that a fresh host resumes from the bucket alone, and that a relative --out
is resolved to one absolute folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.s3server import BUCKET, moto_s3
from wgen.cli import app
from wgen.core.storage import STAGING_ENV

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as server:
        yield server


def wgen(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def read_json(s3, path: str):
    with s3.filesystem().open_input_stream(f"{BUCKET}/{path}") as stream:
        return json.loads(stream.read())


def check_run(files: set[str], read) -> None:
    """A finished tiny pairs + collect: shards, records, every concept's files."""
    assert any(f.startswith("pairs/") and f.endswith(".parquet") for f in files)
    assert {"concepts.jsonl", "pairs/_SUCCESS.json", "weights/_SUCCESS.json"} <= files
    assert {"weights/_manifest.json", "base/base.json", "config.collect.yaml"} <= files
    assert "weights/_STARTED.json" not in files and "_LOCK.json" not in files
    summary = read("weights/_SUCCESS.json")
    assert summary["record"]["stage"] == "collect" and read("pairs/_SUCCESS.json")["pairs"] > 0
    statuses = {
        f.split("/")[-1][: -len(".json")] for f in files if f.startswith("weights/_status/")
    }
    assert len(statuses) == summary["selected"] > 0
    converged = {c for c in statuses if read(f"weights/_status/{c}.json")["status"] == "converged"}
    assert len(converged) == summary["converged"] > 0
    assert {f"weights/{c}.parquet" for c in converged} <= files


def test_pairs_and_collect_with_out_s3(ray_local, s3, tmp_path, monkeypatch):
    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "host1"))
    # The key in the URI: the session's Ray workers may predate the test's AWS_* variables
    # (moto refuses unsigned writes), as a cluster's nodes need the key one way or the other.
    uri = s3.uri("run", keys=True)
    wgen("pairs", "--preset", "tiny", "--out", uri)
    wgen("collect", "--preset", "tiny", "--out", uri)
    files = set(s3.files("run"))
    check_run(files, lambda path: read_json(s3, f"run/{path}"))

    # A collection stopped before its last concept (no _SUCCESS.json, one concept missing),
    # resumed from another host with nothing staged: it trains exactly that one concept.
    lost = sorted(f for f in files if f.startswith("weights/") and f.endswith(".parquet"))[0]
    concept = Path(lost).stem
    fs = s3.filesystem()
    lost = (f"{concept}.parquet", f"_status/{concept}.json", f"_attempts/{concept}.json")
    for name in (*lost, "_SUCCESS.json"):
        if f"weights/{name}" in files:
            fs.delete_file(f"{BUCKET}/run/weights/{name}")
    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "host2"))
    output = wgen("collect", "--preset", "tiny", "--out", uri)
    assert "1 to train" in output, output
    assert "testing:testing@" not in output and "testing:***@" in output  # the secret hidden
    assert set(s3.files("run")) == files
    check_run(files, lambda path: read_json(s3, f"run/{path}"))

    # Finished: a third run skips, without changing the bucket.
    before = s3.files("run")
    assert "skipping" in wgen("collect", "--preset", "tiny", "--out", uri)
    assert s3.files("run") == before


def test_pairs_and_collect_with_a_relative_path(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wgen("pairs", "--preset", "tiny", "--out", "runs/local")
    wgen("collect", "--preset", "tiny", "--out", "runs/local")
    out = tmp_path / "runs" / "local"
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    check_run(files, lambda path: json.loads((out / path).read_text()))


# 30 s measured (a Ray Train start-up); in the slow tier to keep the default run short. Run
# it after the collection above: pytest -m "" tests/e2e/test_storage_uri.py
@pytest.mark.slow
def test_train_with_out_s3(ray_local, s3, tmp_path, monkeypatch):
    """The generator on the weights collected above, from yet another host: Ray Train keeps
    its checkpoints at the URI (storage_filesystem) and the exported generator lands there."""
    before = s3.files("run")
    if "weights/_SUCCESS.json" not in before:
        pytest.skip("needs test_pairs_and_collect_with_out_s3 first")
    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "host3"))
    uri = s3.uri("run", keys=True)
    wgen("train", "--preset", "tiny", "--set", "train.epochs=1", "--out", uri)
    files = set(s3.files("run"))
    assert {"generator/_SUCCESS.json", "config.train.yaml"} <= files
    assert read_json(s3, "run/generator/_SUCCESS.json")["record"]["stage"] == "train"
    assert any(f.startswith("ray_results/") and "/checkpoint_" in f for f in files), files
    assert any(f.startswith("generator/") and f.endswith(".safetensors") for f in files)


@pytest.mark.slow
def test_bench_with_out_s3(ray_local, s3, tmp_path, monkeypatch):
    """The benchmark on the generator trained above, from a fourth host: its per-run files and
    results land at the URI, and a re-run from a fifth host finds them and redoes nothing."""
    if "generator/_SUCCESS.json" not in s3.files("run"):
        pytest.skip("needs test_train_with_out_s3 first")
    uri = s3.uri("run", keys=True)
    methods = ("--methods", "lora-zero,mean,wgen-1")
    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "host4"))
    wgen("bench", "--preset", "tiny", "--out", uri, *methods)
    files = set(s3.files("run"))
    assert {"bench/results.json", "bench/report.md"} <= files, files
    runs = {f for f in files if f.startswith("bench/runs/") and f.endswith(".json")}
    assert len(runs) == 2 * 3  # the tiny preset's 2 held-out concepts x 3 methods x 1 seed
    results = read_json(s3, "run/bench/results.json")
    assert set(results["summary"]) == {"lora-zero", "mean", "wgen-1"}
    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "host5"))
    again = wgen("bench", "--preset", "tiny", "--out", uri, *methods)
    assert "6 already finished, 0 to run" in again, again
