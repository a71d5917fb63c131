"""Collection throughput: concepts per hour with 1 and 2 training actors on Ray, against a
plain Python loop over the same concepts in one process (the Ray pipeline's overhead).

    python benchmarks/collect_scaling.py --out runs/demo --concepts 8

Uses the run folder's pairs and base generator (run `wgen collect` once first); writes the
scratch runs under <out>/bench/scaling/ and prints one line per setting. Every setting
trains the same concepts with the same seeds, so they do the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from wgen.collect.stage import collect_one, run_collect, select_concepts
from wgen.config import load_config
from wgen.core.runtime import init_ray
from wgen.data.pairs import read_pairs
from wgen.gan.metrics import build_feature_extractor
from wgen.gan.training import BaseGAN, concept_pairs
from wgen.models.base import BASE_DIR
from wgen.weights.store import WeightStore


def scratch_run(out: Path, name: str) -> Path:
    """A run folder sharing <out>'s pairs and base generator, with no weights yet."""
    run = out / "bench" / "scaling" / name
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    for item in ("pairs", "concepts.jsonl", BASE_DIR):
        os.symlink((out / item).resolve(), run / item)
    return run


def plain_loop(config, out: Path, run: Path, ids: list[str]) -> float:
    """The same work without Ray: one process, one concept after another."""
    from wgen.gan.training import weight_manifest

    torch.set_num_threads(config.gan.threads)
    base = BaseGAN.load(out / BASE_DIR)
    store = WeightStore(run)
    store.save_manifest(weight_manifest(base, config.lora))
    extractor = build_feature_extractor(config.collect.feature_extractor)
    start = time.perf_counter()
    frame = read_pairs(out, ids)
    for pairs in concept_pairs(frame, config.collect):
        collect_one(config, base, extractor, store, pairs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--concepts", type=int, default=8, help="concepts trained in every setting")
    args = parser.parse_args()

    overrides = [f"collect.max_concepts={args.concepts}"]
    config = load_config(args.preset, overrides)
    ids = select_concepts(args.out, config.collect)
    init_ray()
    results = {}
    inside = {}  # seconds spent inside per-concept training, summed (same machine load as the wall time)
    for actors in (1, 2):
        run = scratch_run(args.out, f"ray_{actors}")
        config = load_config(args.preset, [*overrides, f"collect.actors={actors}"])
        start = time.perf_counter()
        run_collect(config, run)
        results[f"ray_{actors}_actors"] = time.perf_counter() - start
        inside[f"ray_{actors}_actors"] = sum(
            s["seconds"] for s in WeightStore(run).statuses().values()
        )
    results["plain_loop"] = plain_loop(
        load_config(args.preset, overrides), args.out, scratch_run(args.out, "plain"), ids
    )

    print(f"\n{len(ids)} concepts, preset {args.preset}, {os.cpu_count()} cores")
    for name, seconds in results.items():
        print(f"{name:14s} {seconds:8.1f} s  {len(ids) / seconds * 3600:8.1f} concepts/hour")
    # The plain loop runs at another time than the Ray runs, so on a shared machine its
    # ratio mixes overhead with load changes; the in-run figure below does not.
    in_run = results["ray_1_actors"] / inside["ray_1_actors"] - 1
    print(
        f"Ray pipeline overhead inside the 1-actor run (wall vs summed training time): "
        f"{in_run:+.1%} ({results['ray_1_actors'] - inside['ray_1_actors']:.1f} s, mostly start-up)"
    )
    overhead = results["ray_1_actors"] / results["plain_loop"] - 1
    speedup = results["ray_1_actors"] / results["ray_2_actors"]
    print(
        f"Ray overhead, 1 actor vs plain loop: {overhead:+.1%}; speed-up 2 actors vs 1: {speedup:.2f}x"
    )
    summary = {
        "concepts": ids,
        "seconds": results,
        "ray_overhead": overhead,
        "speedup_2_vs_1": speedup,
    }
    (args.out / "bench" / "scaling" / "results.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
