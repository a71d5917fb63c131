"""Train several weight generators on one run folder's weights, one per setting, for ablations.

Each ``--variant NAME:key=value,key=value`` (empty after the colon = the config as it is)
trains through the same Ray Train driver as ``wgen train`` (`wgen.generator.fit`) and is
exported to ``OUT/variants/NAME/``; ``--set`` applies to every variant. Compare them with
``benchmarks/generator_quality.py --generator NAME=OUT/variants/NAME ...``.

    .venv/bin/python benchmarks/train_variants.py --out runs/study --set train.epochs=10 \\
        --variant full: --variant no-func:train.func_weight=0 --variant pooled:denoiser.text=pooled
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from wgen.config import Config, load_config
from wgen.core.runtime import init_ray
from wgen.generator.fit import export_generator, fit_generator, run_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--variant", action="append", required=True, help="NAME:key=value,...")
    args = parser.parse_args()
    variants: dict[str, Config] = {}
    for spec in args.variant:  # every variant's config is checked before anything trains
        name, _, settings = spec.partition(":")
        extra = [s for s in settings.split(",") if s.strip()]
        variants[name] = load_config(args.preset, args.overrides + extra)
    init_ray()
    for name, config in variants.items():
        target = args.out / "variants" / name
        start = time.perf_counter()
        result = fit_generator(config, args.out, name=f"{run_name(config)}-{name}")
        generator = export_generator(result.checkpoint, target, config.train.export)
        metrics = generator.info.get("metrics", {})
        print(
            f"variant {name}: {time.perf_counter() - start:.0f} s, epoch {generator.info.get('epoch')}, "
            f"quality l1 {metrics.get('quality_l1', float('nan')):.4f} → {target}"
        )


if __name__ == "__main__":
    main()
