"""Bad situations that need a real run: too few converged concepts, Ctrl-C during collection,
and a local Ray head that listens on the loopback address only."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.e2e.damaged import refused_naming, truncate
from tests.e2e.interrupt import interrupt_wgen
from wgen.cli import app
from wgen.config import load_config
from wgen.core.runfolder import LOCK_FILE
from wgen.core.runtime import SUCCESS_FILE, read_json
from wgen.data.pairs import run_pairs
from wgen.weights.store import WeightStore

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def pairs_run(ray_local, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pairs_bad_inputs")
    run_pairs(load_config("tiny"), out)
    return out


def fresh_run(pairs_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    for name in ("pairs", "concepts.jsonl"):
        os.symlink(pairs_run / name, out / name)
    return out


def test_local_head_listens_on_loopback_only(ray_local):
    import ray

    assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")


def test_workers_of_a_local_head_address_their_own_cluster(ray_local):
    # Ray Train's placement-group cleaner resolves "auto" from inside a worker: with another
    # Ray instance on the machine it asked that one and removed our training's resources.
    import ray

    @ray.remote(num_cpus=0.1)
    def ray_address_and_cleaner_warnings() -> tuple[str | None, bool]:
        import logging

        from wgen.core.runtime import PLACEMENT_GROUP_CLEANER_LOGGER

        cleaner = logging.getLogger(PLACEMENT_GROUP_CLEANER_LOGGER)
        noisy = cleaner.isEnabledFor(logging.WARNING) or logging.getLogger("ray.data").isEnabledFor(
            logging.INFO
        )
        return os.environ.get("RAY_ADDRESS"), noisy

    address, noisy = ray.get(ray_address_and_cleaner_warnings.remote())
    assert address == ray.get_runtime_context().gcs_address
    # without a dashboard the cleaner's State API query always fails (a warning every few
    # seconds), and Ray Data's INFO lines in actors are dataset plans: both off in workers
    assert not noisy


def test_collect_below_min_converged_exits_3_naming_the_failures(pairs_run, tmp_path):
    out = fresh_run(pairs_run, tmp_path)
    args = ["collect", "--preset", "tiny", "--set", "collect.max_steps=5", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("error:"))
    assert "only 0/4 concepts converged" in line and "collect.min_converged=60%" in line
    assert "c0" in line and "--retry" in line
    summary = read_json(out / "weights" / SUCCESS_FILE)  # the weights and summary are kept
    assert summary["record"]["preset"] == "tiny" and summary["selected"] == 4
    assert not (out / LOCK_FILE).exists()


def test_ctrl_c_is_reported_and_not_counted_as_an_attempt(ray_local, pairs_run, tmp_path):
    out = fresh_run(pairs_run, tmp_path)
    slow = ["collect.max_steps=300", "collect.patience=30", "collect.max_concepts=4"]
    args = ["--preset", "tiny", "--out", str(out)] + [a for s in slow for a in ("--set", s)]
    code, output = interrupt_wgen(
        ["collect", *args], ray_local, lambda line: line.startswith("collect: 1/")
    )
    assert code == 130, output[-3000:]
    assert re.search(r"interrupted; \d of 4 concepts finished, re-run the same command", output)
    store = WeightStore(out)
    unfinished = {f"c{i:04d}" for i in range(12)} - store.finished()
    assert all(store.attempts(c) == [] for c in unfinished), "an interruption used up an attempt"
    assert not (out / LOCK_FILE).exists()


def test_collect_force_refuses_a_truncated_pairs_shard_in_one_line(ray_local, pairs_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(pairs_run, out)  # a copy: the shard is damaged here only
    shard = sorted((out / "pairs").glob("*.parquet"))[0]
    truncate(shard)
    args = ["collect", "--preset", "tiny", "--out", str(out), "--force"]
    line = refused_naming(args, shard, "wgen pairs --preset tiny", ray_local)
    assert "damaged" in line and "--force" in line
    assert not (out / "weights").exists() and not (out / LOCK_FILE).exists()
