"""Ray Train throughput of the weight generator: blocks per second with 1 and 2 workers.

Runs `wgen.generator.fit.fit_generator` on a run folder's weight dataset for a few epochs per worker
count (each in its own throw-away storage folder, so the run's own training is untouched)
and reports, per worker count, the blocks per second summed over workers (the median over
the epochs after the first, whose figure includes the data pipeline's start-up), the time
the workers waited for data, and the wall time of the whole fit (Ray Train start-up
included). One torch thread per worker (`train.threads`).

    .venv/bin/python benchmarks/train_throughput.py --out runs/demo --workers 1,2 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from wgen.config import load_config
from wgen.core.runtime import init_ray, read_json
from wgen.generator.fit import TRAIN_STATE_FILE, fit_generator


def measure(config, out: Path, workers: int, storage: Path) -> dict:
    start = time.perf_counter()
    result = fit_generator(config, out, name=f"throughput-w{workers}", storage_path=storage)
    wall = time.perf_counter() - start
    with result.checkpoint.as_directory() as folder:
        history = read_json(Path(folder) / TRAIN_STATE_FILE)["history"]
    steady = history[1:] or history
    return {
        "workers": workers,
        "global_batch": config.train.batch_size,
        "blocks_per_epoch": history[0]["blocks"],
        "blocks_per_s": statistics.median(h["blocks_per_s"] for h in steady),
        "first_epoch_blocks_per_s": history[0]["blocks_per_s"],
        "data_wait_s_per_epoch": statistics.median(h["data_wait_s"] for h in steady),
        "epoch_s": statistics.median(h["epoch_s"] for h in steady),
        "fit_wall_s": wall,
        "epochs": len(history),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder with weights/")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    init_ray()
    rows = []
    storage = Path(tempfile.mkdtemp(prefix="wgen-throughput-"))
    try:
        for workers in (int(w) for w in args.workers.split(",")):
            config = load_config(
                args.preset,
                args.overrides
                + [
                    f"train.workers={workers}",
                    f"train.epochs={args.epochs}",
                    "train.quality_every=0",
                ],
            )
            rows.append(measure(config, args.out, workers, storage))
            print(
                f"throughput: {workers} worker(s): {rows[-1]['blocks_per_s']:,.0f} blocks/s "
                f"(epoch {rows[-1]['epoch_s']:.1f} s, waiting for data {rows[-1]['data_wait_s_per_epoch']:.2f} s; "
                f"first epoch {rows[-1]['first_epoch_blocks_per_s']:,.0f} blocks/s; whole fit "
                f"{rows[-1]['fit_wall_s']:.0f} s incl. start-up)",
                flush=True,
            )
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    load = os.getloadavg()
    print(f"throughput: load average during the run {load[0]:.1f} on {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "loadavg": load}, indent=2))


if __name__ == "__main__":
    main()
