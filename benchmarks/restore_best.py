"""Re-train the concepts a finished collection recorded as not converged, now with
`collect.restore_best` (go back to the best state after drifting away from it), in this
process, one after the other; prints per concept the seconds, the steps and the best L1
before and after, and writes them as JSON.

    .venv/bin/python benchmarks/restore_best.py --out runs/demo --json docs/restore_best.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from wgen.collect.stage import ensure_base
from wgen.config import load_config
from wgen.data.pairs import read_pairs
from wgen.gan.metrics import build_feature_extractor
from wgen.gan.training import concept_pairs, train_lora
from wgen.weights.store import WeightStore


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="a finished collection")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="at most this many concepts")
    args = parser.parse_args()

    torch.set_num_threads(1)  # as one collection actor
    statuses = WeightStore(args.out).statuses()
    before = {c: s for c, s in sorted(statuses.items()) if s.get("status") == "not_converged"}
    ids = list(before)[: args.limit]
    if not ids:
        raise SystemExit(f"{args.out}/weights has no concept recorded as not converged")
    # The collection's own settings, `restore_best` on (the record predates the field).
    config = load_config(args.preset, ["collect.restore_best=true"])
    base = ensure_base(config, args.out)
    extractor = build_feature_extractor(config.collect.feature_extractor)
    rows = []
    for pairs in concept_pairs(read_pairs(args.out, ids), config.collect):
        old = before[pairs.concept_id]
        start = time.perf_counter()
        run = train_lora(base, config, pairs, extractor)
        seconds = time.perf_counter() - start
        at_convergence = [h for h in run.history if h["step"] <= (run.restored_step or 0)]
        row = {
            "concept_id": pairs.concept_id,
            "text": pairs.text,
            "status": run.status,
            "restored_step": run.restored_step,
            "converged_step": run.converged_step,
            "steps": run.history[-1]["step"],
            "seconds": round(seconds, 1),
            "best_l1": min(h["l1"] for h in run.history),
            "restored_l1": at_convergence[-1]["l1"] if at_convergence else None,
            "checkpoint_l1": [round(c["metrics"]["l1"], 4) for c in run.checkpoints],
            "before_steps": old["history"][-1]["step"],
            "before_seconds": old.get("seconds"),
            "before_best_l1": min(h["l1"] for h in old["history"]),
            "before_final_l1": old["history"][-1]["l1"],
        }
        rows.append(row)
        print(
            f"{row['concept_id']} {row['status']:>13}  restored to step {row['restored_step']}"
            f"  {row['steps']:4d} steps {row['seconds']:6.1f} s (before: "
            f"{row['before_steps']} steps {row['before_seconds']} s)  best L1 "
            f"{row['best_l1']:.4f} (before {row['before_best_l1']:.4f}), checkpoints "
            f"{row['checkpoint_l1']} (before: final {row['before_final_l1']:.4f})",
            flush=True,
        )
    total, total_before = (sum(r[k] or 0 for r in rows) for k in ("seconds", "before_seconds"))
    converged = sum(r["status"] == "converged" for r in rows)
    print(
        f"{converged}/{len(rows)} converged; {total:.0f} s against {total_before:.0f} s "
        f"recorded by the collection"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"out": str(args.out), "concepts": rows}, indent=1))


if __name__ == "__main__":
    main()
