"""Validation metric over steps for a few concepts, with the convergence point and the K
post-convergence checkpoints marked.

    python benchmarks/convergence_plot.py --out runs/demo --png docs/results/collect/convergence.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wgen.core.plots import convergence_plot
from wgen.weights.store import WeightStore


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--png", type=Path, default=Path("docs/results/collect/convergence.png"))
    parser.add_argument("--concepts", type=int, default=5)
    parser.add_argument("--metric", default="l1", choices=["l1", "psnr", "fd"])
    args = parser.parse_args()

    statuses = [s for s in WeightStore(args.out).statuses().values() if s.get("history")]
    # Spread the picks over the list so quick and slow concepts both appear.
    step = max(1, len(statuses) // args.concepts)
    chosen = statuses[::step][: args.concepts]
    curves = [
        {
            "label": f"{s['concept_id']} {s['concept_text'][:40]} ({s['status']})",
            "history": s["history"],
            "converged_step": s.get("converged_step"),
            "checkpoint_steps": s.get("checkpoint_steps", []),
        }
        for s in chosen
    ]
    print(convergence_plot(curves, args.png, args.metric))


if __name__ == "__main__":
    main()
