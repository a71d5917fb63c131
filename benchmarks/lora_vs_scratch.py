"""Can LoRA from the base reach the quality of the whole generator trained from scratch?

For a few training concepts of a run folder: the identity (input returned unchanged), the
base generator (LoRA step 0), LoRA fine-tuning from the base and pix2pix from scratch, each
trained until convergence by the same rule. Quality = paired L1 on the held-back pairs
([0, 1] scale, lower is better), smoothed as the mean of the last `collect.smooth`
evaluations, because GAN evaluations swing 10-20%.

    python benchmarks/lora_vs_scratch.py --out runs/demo --concepts 6
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from wgen.config import load_config
from wgen.data.pairs import read_pairs
from wgen.gan.metrics import build_feature_extractor, paired_l1
from wgen.gan.training import BaseGAN, concept_pairs, train_lora, train_scratch
from wgen.models.base import BASE_DIR


def final(run, smooth: int) -> float:
    return float(np.mean([h["l1"] for h in run.history[-smooth:]]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--concepts", type=int, default=6)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="section.key=value"
    )
    args = parser.parse_args()

    config = load_config(args.preset, args.overrides)
    torch.set_num_threads(config.gan.threads)
    base = BaseGAN.load(args.out / BASE_DIR)
    extractor = build_feature_extractor(config.collect.feature_extractor)
    frame = read_pairs(args.out)
    ids = sorted(frame.loc[frame["split"] == "train", "concept_id"].unique())
    ids = ids[:: max(1, len(ids) // args.concepts)][: args.concepts]
    rows = []
    header = f"{'concept':7s} {'identity':>8s} {'base':>7s} {'lora':>7s} {'steps':>5s} {'s':>5s} {'scratch':>7s} {'steps':>5s} {'s':>5s} {'gap':>6s}  text"
    print(header)
    for pairs in concept_pairs(frame[frame["concept_id"].isin(ids)], config.collect):
        lora = train_lora(base, config, pairs, extractor, k_checkpoints=0)
        scratch = train_scratch(config, pairs, extractor, init="identity")  # as measured
        row = {
            "concept_id": pairs.concept_id,
            "text": pairs.text,
            "identity_l1": paired_l1(pairs.eval_sources, pairs.eval_targets),
            "base_l1": lora.history[0]["l1"],
            "lora_l1": final(lora, config.collect.smooth),
            "lora_steps": lora.history[-1]["step"],
            "lora_seconds": lora.seconds,
            "lora_status": lora.status,
            "scratch_l1": final(scratch, config.collect.smooth),
            "scratch_steps": scratch.history[-1]["step"],
            "scratch_seconds": scratch.seconds,
            "scratch_status": scratch.status,
        }
        row["gap"] = row["lora_l1"] / row["scratch_l1"] - 1
        rows.append(row)
        print(
            f"{row['concept_id']:7s} {row['identity_l1']:8.4f} {row['base_l1']:7.4f} {row['lora_l1']:7.4f} "
            f"{row['lora_steps']:5d} {row['lora_seconds']:5.0f} {row['scratch_l1']:7.4f} {row['scratch_steps']:5d} "
            f"{row['scratch_seconds']:5.0f} {row['gap']:+6.0%}  {row['text']}",
            flush=True,
        )
    gaps = [r["gap"] for r in rows]
    base_worse = sum(r["base_l1"] > r["identity_l1"] for r in rows)
    print(
        f"\nLoRA vs scratch gap: median {np.median(gaps):+.1%}, mean {np.mean(gaps):+.1%} "
        f"(negative = LoRA better); LoRA better on {sum(g < 0 for g in gaps)}/{len(gaps)}; "
        f"base worse than identity on {base_worse}/{len(rows)}"
    )
    path = args.out / "bench" / "lora_vs_scratch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": config.to_dict(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
