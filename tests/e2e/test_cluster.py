"""Collection and generator training on a multi-node Ray cluster: concepts spread over the
workers; a lost node costs only the concepts it was training, which are trained again
elsewhere; and a lost node under a Ray Train worker costs only the epochs since the last
checkpoint, which the new worker, on the other node, resumes from.

Each scenario runs in its own process (``python -m tests.e2e.test_cluster SCENARIO DIR``)
on a `ray.cluster_utils.Cluster` that it starts and shuts down itself: a head node and two
worker nodes on this machine, each worker with one (declared) GPU and a custom resource
(``worker_a`` / ``worker_b``) so the test can say on which node each concept trained. The
actors ask for half a GPU (``collect.gpus_per_actor=0.5``), so they can only run on the
workers, and the device plumbing of a GPU-assigned actor runs here on the CPU (Ray assigns
GPU 0, torch sees no CUDA, the actor trains on the CPU). The shared session Ray is not
touched; everything the scenario started is stopped by pid if it is left behind.
Both workers also declare ``trainer``, which the generator's Train worker asks for
(``train.worker_resources``), so it never trains on the head (whose loss would end the run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.trainrun import registered_epoch
from tests.e2e.weights import collect_without_ray

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

# Tiny collection, actors only on the GPU workers (the head declares no GPU).
BASE = [
    "collect.max_concepts=4",
    "collect.actors=2",
    "collect.cpus_per_actor=1",
    "collect.gpus_per_actor=0.5",
]
# Longer per-concept training, so a node can be removed while concepts are in flight: with
# patience 30 a tiny concept converged in 2.2-2.7 s, before the 5 s the scenario waits into an
# attempt, and no concept was ever "seen training on worker_b". One actor per worker node (a
# whole GPU each, one GPU per node), so one is always on the node that is removed.
SLOW = ["collect.max_steps=2000", "collect.patience=200", "collect.gpus_per_actor=1"]
# Generator training on the worker nodes only; enough epochs to lose a node mid-run. Six
# concepts with enough steps that both splits are stored (as in test_train.py).
TRAIN = [
    "collect.max_concepts=6",
    "collect.max_steps=200",
    "train.epochs=8",
    "train.worker_resources={trainer: 1}",
]


# ----------------------------------------------------------------------------- scenarios


def _start_cluster(temp_dir: str):
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "num_gpus": 0,
            "resources": {"head_node": 1},
            "include_dashboard": False,
            "temp_dir": temp_dir,
        },
    )
    workers = {
        name: cluster.add_node(
            num_cpus=2, num_gpus=1, resources={name: 1, "trainer": 1}, temp_dir=temp_dir
        )
        for name in ("worker_a", "worker_b")
    }
    cluster.wait_for_nodes()
    return cluster, workers


def _node_of_pid(pid: int, workers: dict) -> str | None:
    """Which worker node a worker process belongs to: its raylet is among its parents."""
    import psutil
    from ray._private import ray_constants

    try:
        parents = {p.pid for p in psutil.Process(pid).parents()}
    except psutil.NoSuchProcess:
        return None
    for name, node in workers.items():
        raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        if raylet in parents:
            return name
    return None


def scenario(name: str, folder: Path) -> dict:
    import ray

    from wgen.collect.stage import run_collect, select_concepts
    from wgen.config import load_config
    from wgen.core.runtime import init_ray
    from wgen.data.pairs import run_pairs
    from wgen.weights.store import WeightStore

    temp_dir = tempfile.mkdtemp(prefix="wgc", dir="/tmp")  # short: Ray's socket paths
    result: dict = {"temp_dir": temp_dir}
    (folder / "temp_dir").write_text(temp_dir)
    cluster, workers = _start_cluster(temp_dir)
    try:
        os.environ["RAY_ADDRESS"] = cluster.address
        init_ray(cluster.address)
        names = {node.node_id: n for n, node in workers.items()}
        names.update({cluster.head_node.node_id: "head"})
        out = folder / "run"
        if name == "train_node_loss":
            config = load_config("tiny", TRAIN)
            run_pairs(config, out)
            collect_without_ray(config, out)  # the collection pool has its own scenarios
            result.update(_train_losing_a_node(config, out, cluster, workers, names))
            return result
        config = load_config("tiny", BASE + (SLOW if name == "node_loss" else []))
        run_pairs(config, out)
        store = WeightStore(out)
        start = time.time()
        if name == "spread":
            summary = run_collect(config, out)
        else:
            summary, lost = _collect_losing_a_node(config, out, store, cluster, workers, start)
            result["lost"] = lost
        result["seconds"] = round(time.time() - start, 1)
        result["selected"] = select_concepts(out, config.collect)
        result["summary"] = {k: summary[k] for k in ("selected", "converged", "by_status")}
        result["statuses"] = {
            c: {
                "status": s["status"],
                "node": names.get(s.get("node_id"), s.get("node_id")),
                "gpu_ids": s.get("gpu_ids"),
                "device": s.get("device"),
                "seconds": s.get("seconds"),
            }
            for c, s in store.statuses().items()
        }
        result["attempts"] = {c: len(store.attempts(c)) for c in result["selected"]}
        frame = store.read(with_vectors=False)
        result["rows"] = len(frame)
        result["duplicated_rows"] = int(frame.duplicated(["concept_id", "checkpoint"]).sum())
        result["k"] = config.collect.k_checkpoints
        result["base"] = json.loads((out / "base" / "base.json").read_text())
    finally:
        ray.shutdown()
        cluster.shutdown()
    return result


def _in_background(stage, *args) -> tuple[threading.Thread, dict]:
    """Run ``stage(*args)`` in a thread, so the scenario can remove a node meanwhile; its
    result or error lands in the returned dict."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = stage(*args)
        except BaseException as err:  # noqa: BLE001 - re-raised by _finish
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _finish(thread: threading.Thread, outcome: dict, what: str):
    """Wait for the stage after the node was removed; its result, or its error raised."""
    thread.join(timeout=900)
    if thread.is_alive():
        raise RuntimeError(f"{what} did not finish within 900 s after the node was removed")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _collect_losing_a_node(config, out, store, cluster, workers, start) -> tuple[dict, dict]:
    """Run collection in a thread; once a concept is in flight on worker_b (and none has
    finished there yet), remove worker_b at once (no graceful drain)."""
    from wgen.collect.stage import run_collect

    thread, outcome = _in_background(run_collect, config, out)
    seen: dict[str, float] = {}  # concept → when its first attempt appeared
    victims: list[str] = []
    deadline = time.time() + 600
    while not victims and time.time() < deadline and thread.is_alive():
        for path in store.attempts_dir.glob("*.json") if store.attempts_dir.exists() else []:
            seen.setdefault(path.stem, time.time())
        in_flight = [c for c in seen if store.status(c) is None]
        on_b = [
            c
            for c in in_flight
            if _node_of_pid(store.attempts(c)[-1]["pid"], workers) == "worker_b"
        ]
        # wait a little into the attempt, so real training work is lost
        if on_b and time.time() - min(seen[c] for c in on_b) > 5:
            victims = on_b
            break
        time.sleep(0.2)
    if not victims:
        raise RuntimeError(f"no concept was seen training on worker_b (seen: {sorted(seen)})")
    removed_at = time.time()
    cluster.remove_node(workers["worker_b"], allow_graceful=False)
    summary = _finish(thread, outcome, "collection")
    lost = {
        "victims": victims,
        "removed_after_s": round(removed_at - start, 1),
        # an upper bound of the training time thrown away: attempt start → node removed
        "seconds_lost": {c: round(removed_at - seen[c], 1) for c in victims},
        "finished_before_removal": sorted(
            c for c in seen if c not in victims and (store.status_dir / f"{c}.json").exists()
        ),
        "recovered_after_s": round(time.time() - removed_at, 1),
    }
    return summary, lost


def _train_losing_a_node(config, out, cluster, workers, names) -> dict:
    """Fit the generator in a thread; once the controller has registered a checkpoint,
    remove the node of the Train worker at once (no graceful drain), and let Ray Train
    start a new worker group, which can only go to the other worker node."""
    from wgen.generator.checkpoint import WeightGenerator
    from wgen.generator.fit import (
        GENERATOR_DIR,
        PROGRESS_DIR,
        RAY_RESULTS_DIR,
        read_progress,
        run_name,
        run_train,
    )

    run_dir = out / RAY_RESULTS_DIR / run_name(config)
    start = time.time()
    thread, outcome = _in_background(run_train, config, out)
    victim, deadline = None, time.time() + 600
    while victim is None and time.time() < deadline and thread.is_alive():
        events = read_progress(run_dir / PROGRESS_DIR)
        if any(e["event"] == "epoch" for e in events) and registered_epoch(run_dir) >= 1:
            victim = names[[e for e in events if e["event"] == "start"][-1]["node_id"]]
        time.sleep(0.1)
    if victim is None:
        raise RuntimeError(f"no checkpoint was registered: {outcome.get('error')}")
    removed_at, checkpointed = time.time(), registered_epoch(run_dir)
    cluster.remove_node(workers[victim], allow_graceful=False)
    _finish(thread, outcome, "training")
    events = [
        {**e, "node": names.get(e["node_id"]) if "node_id" in e else None}
        for e in read_progress(run_dir / PROGRESS_DIR)
    ]
    starts = [e for e in events if e["event"] == "start"]
    generator = WeightGenerator.load(out / GENERATOR_DIR)
    return {
        "victim": victim,
        "removed_after_s": round(removed_at - start, 1),
        "registered_epoch_at_removal": checkpointed,
        "epochs_before_removal": [
            e["epoch"] for e in events if e["event"] == "epoch" and e["pid"] == starts[0]["pid"]
        ],
        # removal → the new worker's first line (a new worker group, placed on the other node)
        "restarted_after_s": round(starts[-1]["time"] - removed_at, 1) if len(starts) > 1 else None,
        "starts": [{k: e[k] for k in ("pid", "node", "resumed_epoch")} for e in starts],
        "epochs_after_restart": [
            e["epoch"] for e in events if e["event"] == "epoch" and e["pid"] == starts[-1]["pid"]
        ],
        "epochs_trained": generator.info.get("epochs_trained"),
        "epochs": config.train.epochs,
        "seconds": round(time.time() - start, 1),
    }


def main() -> None:
    name, folder = sys.argv[1], Path(sys.argv[2])
    result = scenario(name, folder)
    (folder / "result.json").write_text(json.dumps(result, indent=2, default=str))


# ----------------------------------------------------------------------------- tests


def _kill_leftovers(temp_dir: str) -> None:
    """Stop by pid any process of the scenario's Ray (its temp dir is in their command line)."""
    import psutil

    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if temp_dir and temp_dir in cmdline and process.pid != os.getpid():
            try:
                process.kill()
            except psutil.Error:
                pass


def run_scenario(name: str, folder: Path, timeout: float) -> dict:
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        # Three raylets, each waiting for its metrics agent, on a loaded 2-core machine: the
        # default wait (~1 min) ran out here and the head's raylet aborted.
        "RAY_agent_register_timeout_ms": "600000",
        "RAY_raylet_start_wait_time_s": "600",
        # The pool hands out concepts only once both actors are up. Concepts of the tiny
        # preset take 1-2 s each; under load, the first actor finished all 4 before the
        # second one (on the other node) had imported torch, and "spread" failed.
        "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "600",
    }
    env.pop("RAY_ADDRESS", None)  # never the session's shared Ray
    log = folder / "scenario.log"
    start = time.time()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.test_cluster", name, str(folder)],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        temp_dir = folder / "temp_dir"
        _kill_leftovers(temp_dir.read_text() if temp_dir.exists() else "")
    tail = log.read_text(errors="replace")[-4000:]
    assert process.returncode == 0, f"scenario {name} failed ({process.returncode}):\n{tail}"
    result = json.loads((folder / "result.json").read_text())
    result["wall_s"] = round(time.time() - start, 1)
    print(f"\n{name}: {json.dumps(result, default=str)[:3000]}")
    return result


def check_complete(result: dict) -> None:
    """Every selected concept recorded exactly once, K rows per converged one, none twice."""
    assert sorted(result["statuses"]) == sorted(result["selected"])
    converged = [c for c, s in result["statuses"].items() if s["status"] == "converged"]
    assert result["rows"] == len(converged) * result["k"]
    assert result["duplicated_rows"] == 0


def test_collection_spreads_concepts_over_both_worker_nodes(tmp_path):
    result = run_scenario("spread", tmp_path, timeout=1200)
    check_complete(result)
    nodes = {s["node"] for s in result["statuses"].values()}
    assert nodes == {"worker_a", "worker_b"}, result["statuses"]
    assert all(n == 1 for n in result["attempts"].values())
    # The actors were given half of GPU 0 of their node; with no CUDA here they trained on
    # the CPU (wgen.core.devices), as did the base GAN's task.
    assert all(s["gpu_ids"] == ["0"] and s["device"] == "cpu" for s in result["statuses"].values())
    assert result["base"]["device"] == "cpu"


def test_a_lost_worker_node_costs_only_its_concepts_in_flight(tmp_path):
    result = run_scenario("node_loss", tmp_path, timeout=1400)
    check_complete(result)
    lost = result["lost"]
    for concept in lost["victims"]:  # trained again, on the surviving node, once
        assert result["attempts"][concept] == 2
        assert result["statuses"][concept]["node"] == "worker_a"
    for concept in set(result["selected"]) - set(lost["victims"]):
        assert result["attempts"][concept] == 1, "finished work was redone"


def test_a_lost_training_node_resumes_training_on_the_other_node(tmp_path):
    result = run_scenario("train_node_loss", tmp_path, timeout=1400)
    first, second = result["starts"]  # exactly one restart
    assert first["node"] == result["victim"] and first["resumed_epoch"] == 0
    assert second["node"] in {"worker_a", "worker_b"} - {result["victim"]}
    # resumed from the checkpoint registered before the loss (or a later one), not epoch 0
    assert second["resumed_epoch"] >= result["registered_epoch_at_removal"] >= 1
    assert result["epochs_after_restart"] == list(
        range(second["resumed_epoch"] + 1, result["epochs"] + 1)
    )
    assert result["epochs_trained"] == result["epochs"]


if __name__ == "__main__":
    main()
