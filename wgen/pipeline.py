"""`wgen demo`: every stage in order on one run folder, each skipped when already complete."""

from __future__ import annotations

from pathlib import Path

from wgen.collect.stage import run_collect
from wgen.config import Config
from wgen.core.runtime import print0
from wgen.data.pairs import CONCEPTS_FILE, load_concepts, run_pairs
from wgen.generator.fit import GENERATOR_DIR, run_train
from wgen.generator.generate import run_generate

STAGES_TO_COME = ["tune", "bench", "distill", "pdiff"]


def run_demo(config: Config, out: Path) -> None:
    out = Path(out)
    print0(f"demo: run folder {out.resolve()}")
    run_pairs(config, out)
    run_collect(config, out)
    run_train(config, out)
    generate_heldout_example(out)
    print0(f"demo: stages still to come in this version: {', '.join(STAGES_TO_COME)}")


def generate_heldout_example(out: Path) -> dict:
    """A LoRA for the first held-out concept (never collected, never trained on), written to
    ``<out>/adapters/<concept id>`` with the generator's default sampling."""
    out = Path(out)
    heldout = [c for c in load_concepts(out / CONCEPTS_FILE) if c.split == "heldout"]
    if not heldout:
        raise ValueError(f"{out / CONCEPTS_FILE} lists no held-out concept to generate for")
    concept = heldout[0]
    return run_generate(out / GENERATOR_DIR, concept.text, out / "adapters" / concept.id)
