"""Pairs per second with 1 and 2 editor actors, on one shared Ray instance.

    python benchmarks/pairs_scaling.py --preset demo --repeats 2

Ray start-up is paid once, before the first run; each run includes the editor actors'
start-up (they rebuild the seeded crop pool), the edits, PNG encoding and the Parquet
write. Settings alternate (1, 2, 1, 2, ...) so a change of machine load hits both.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from wgen.config import load_config
from wgen.core.runtime import init_ray
from wgen.data.pairs import run_pairs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    init_ray()
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for actors in (1, 2):
                config = load_config(args.preset, [f"data.editor_actors={actors}"])
                start = time.perf_counter()
                summary = run_pairs(config, Path(tmp) / f"r{repeat}_a{actors}")
                times[actors].append(time.perf_counter() - start)
    pairs = summary["pairs"]
    for actors, seconds in times.items():
        best = min(seconds)
        print(
            f"{actors} editor actor(s): {pairs} pairs, best {best:.1f} s = {pairs / best:.0f} pairs/s  (all runs: {', '.join(f'{s:.1f}' for s in seconds)} s)"
        )
    print(f"speed-up 2 vs 1 actors (best runs): {min(times[1]) / min(times[2]):.2f}x")


if __name__ == "__main__":
    main()
