"""`wgen demo`: every stage in order on one run folder, each skipped when already complete."""

from __future__ import annotations

from pathlib import Path

from wgen.collect import run_collect
from wgen.config import Config
from wgen.pairs import run_pairs
from wgen.runtime import print0

STAGES_TO_COME = ["tune", "bench", "distill", "pdiff"]


def run_demo(config: Config, out: Path) -> None:
    out = Path(out)
    print0(f"demo: run folder {out.resolve()}")
    run_pairs(config, out)
    run_collect(config, out)
    print0(f"demo: stages still to come in this version: {', '.join(STAGES_TO_COME)}")
