"""The base GAN as a `wgen.models.base.BaseModel`: the family "gan".

The selected parameters are the base generator's LoRA A/B and, where trained, its norm
layers' affine parameters (`wgen.gan.lora`); a task is one edit's image pairs; the quality
is the collection stage's own paired metric on the concept's held-back pairs.

Why quality and not the denoising loss: the denoising loss depends on the block size b and
the normalisation, so it cannot compare generators Ray Tune builds with different b. What
matters is how good the GAN is when its LoRA comes from the generator: load the LoRA into
the base GAN and score it (`wgen.gan.training.Evaluator`: L1 / PSNR / Fréchet distance) on
pairs no LoRA was ever trained on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from wgen.config import CollectConfig, Config, LoRAConfig
from wgen.data.pairs import read_pairs
from wgen.gan.lora import ADAPTER, load_adapter, save_adapter
from wgen.gan.metrics import FeatureExtractor, build_feature_extractor, uint8_to_model
from wgen.gan.training import BaseGAN, Evaluator, concept_pairs, lora_generator, weight_manifest
from wgen.models.base import TaskData
from wgen.weights.format import Manifest

# A stored LoRA key omits peft's adapter name (``conv.lora_A.weight``); the live module has
# it (``conv.lora_A.default.weight``).
_PEFT_ADAPTER_PART = re.compile(r"\.(lora_[AB])\.")


class GanBaseModel:
    """The base GAN with its LoRA (+ norms) selection, bound to the LoRA and collection
    sections of a config (the GAN size comes from the base folder itself)."""

    family: ClassVar[str] = "gan"
    quality_key: ClassVar[str] = "l1"  # paired L1 on [0, 1] images, lower is better

    def __init__(self, gan: BaseGAN, lora: LoRAConfig, collect: CollectConfig) -> None:
        self.gan, self.lora, self.collect = gan, lora, collect
        self._manifest: Manifest | None = None
        self._frozen: nn.Module | None = None  # the LoRA generator functional_forward calls
        self._extractor: FeatureExtractor | None = None
        # Fréchet reference statistics are computed once per task's held-back targets: the
        # quality probe scores the same validation concepts three times an evaluation.
        self._evaluators: dict[str, Evaluator] = {}

    @property
    def fingerprint(self) -> str:
        return self.gan.fingerprint

    # -- the selection and the functional forward -------------------------------------------

    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = weight_manifest(self.gan, self.lora)
        return self._manifest

    @property
    def frozen_model(self) -> nn.Module:
        """The base generator with LoRA injected, in eval mode, with no trainable parameter:
        `functional_forward` swaps the selected parameters in per call."""
        if self._frozen is None:
            self._frozen = lora_generator(self.gan, self.lora).eval().requires_grad_(False)
        return self._frozen

    def parameter_names(self, keys: Sequence[str]) -> dict[str, str]:
        """Manifest key → the LoRA generator's parameter name (peft's adapter name put back
        into LoRA keys; norms match as they are)."""
        params = {name for name, _ in self.frozen_model.named_parameters()}
        names = {}
        for key in keys:
            candidates = (key, _PEFT_ADAPTER_PART.sub(rf".\1.{ADAPTER}.", key))
            found = next((c for c in candidates if c in params), None)
            if found is None:
                raise KeyError(f"weight {key!r} of the manifest is not a parameter of the model")
            names[key] = found
        return names

    def functional_forward(
        self, params: Mapping[str, torch.Tensor], inputs: torch.Tensor
    ) -> torch.Tensor:
        """G_{base + params}(inputs): NCHW on [-1, 1]. The frozen model follows the inputs to
        their device (once), so callers never move the base model themselves."""
        model = self.frozen_model
        if next(model.parameters()).device != inputs.device:
            model.to(inputs.device)
        return functional_call(model, dict(params), (inputs,), strict=False)

    def function_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean |G(x) − x̃| on the [0, 1] scale (images are on [-1, 1]): the paired L1."""
        return 0.5 * (outputs - targets).abs().mean()

    def tensors(
        self, inputs: np.ndarray, targets: np.ndarray, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NHWC image pairs → the generator's NCHW [-1, 1] tensors on ``device``."""
        return uint8_to_model(inputs).to(device), uint8_to_model(targets).to(device)

    # -- tasks and quality -------------------------------------------------------------------

    def task_data(self, out: Path, concept_ids: Sequence[str]) -> list[TaskData]:
        """Each concept's pairs: train = the pairs its LoRA trained on, eval = the last
        `collect.eval_pairs` by image id, held back (`ConceptPairs.from_frame`)."""
        if not concept_ids:
            return []
        return [
            TaskData(
                p.concept_id,
                p.text,
                p.train_sources,
                p.train_targets,
                p.eval_sources,
                p.eval_targets,
            )
            for p in concept_pairs(read_pairs(Path(out), list(concept_ids)), self.collect)
        ]

    @property
    def extractor(self) -> FeatureExtractor:
        """The Fréchet features (`collect.feature_extractor`), built on first use."""
        if self._extractor is None:
            self._extractor = build_feature_extractor(self.collect.feature_extractor)
        return self._extractor

    def evaluator(self, task: TaskData) -> Evaluator:
        """The task's held-back pairs' evaluator (its reference statistics computed once)."""
        evaluator = self._evaluators.get(task.concept_id)
        if evaluator is None or evaluator.targets is not task.eval_targets:
            evaluator = Evaluator(task.eval_inputs, task.eval_targets, self.extractor)
            self._evaluators[task.concept_id] = evaluator
        return evaluator

    def quality(self, state: Mapping[str, torch.Tensor] | None, task: TaskData) -> dict[str, float]:
        """{l1, psnr, fd} of the base GAN with LoRA ``state`` (None = the standard init,
        B = 0) on the task's held-back pairs."""
        init = None if state is None else dict(state)
        return self.evaluator(task)(lora_generator(self.gan, self.lora, init))

    # -- files -------------------------------------------------------------------------------

    def export(self, state: Mapping[str, torch.Tensor], folder: Path) -> Path:
        """``state`` as a standard peft adapter folder (`wgen.gan.lora`), checked to load back
        into the base generator."""
        folder = Path(folder)
        model = lora_generator(self.gan, self.lora, dict(state))
        save_adapter(model, self.gan.size, folder, self.fingerprint)
        load_adapter(self.gan.build_generator(), folder, self.fingerprint)
        return folder

    def save(self, folder: Path) -> None:
        self.gan.save(folder)

    @classmethod
    def load(cls, folder: Path, config: Config) -> GanBaseModel:
        return cls(BaseGAN.load(folder), config.lora, config.collect)
