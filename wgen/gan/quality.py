"""GAN quality of a LoRA on a concept's held-back pairs: the score that does not depend on b.

The denoising loss depends on the block size b and the normalisation, so it cannot compare
generators Ray Tune builds with different b. What matters is how good the GAN is when its
LoRA comes from the generator: load the LoRA into the base GAN and score it with the
collection stage's own paired metric (`wgen.gan.training.Evaluator`: L1 / PSNR / Fréchet
distance) on the concept's evaluation pairs, which no LoRA was ever trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wgen.config import Config
from wgen.data.pairs import read_pairs
from wgen.gan.metrics import FeatureExtractor
from wgen.gan.training import BaseGAN, Evaluator, concept_pairs, lora_generator

METRICS = ("l1", "psnr", "fd")


@dataclass
class ConceptEval:
    """One concept's text and the evaluator of its held-back pairs."""

    concept_id: str
    text: str
    evaluate: Evaluator


def concept_evals(
    out: Path, concept_ids: list[str], config: Config, extractor: FeatureExtractor
) -> list[ConceptEval]:
    """Evaluators on the held-back pairs (`collect.eval_pairs`) of each concept, sorted by id."""
    if not concept_ids:
        return []
    frame = read_pairs(out, list(concept_ids))
    return [
        ConceptEval(p.concept_id, p.text, Evaluator(p.eval_sources, p.eval_targets, extractor))
        for p in concept_pairs(frame, config.collect)
    ]


def score_lora(
    base: BaseGAN,
    config: Config,
    state: dict[str, torch.Tensor] | None,
    evaluate: Evaluator,
) -> dict[str, float]:
    """{l1, psnr, fd} of the base GAN with LoRA ``state`` (None = the standard init, B = 0)."""
    return evaluate(lora_generator(base, config, init=state))


def mean_metrics(scores: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over concepts."""
    return {m: float(np.mean([s[m] for s in scores])) for m in METRICS}
