"""What wgen needs of a base model: the protocol every weight family implements.

wgen learns to generate the *selected* parameters of a frozen base model (the LoRA and norm
layers of the base GAN; the norm layers of a classifier; ...). Collection, the generator's
training (its function-space term and its quality probe), generation and the bench need
five things of that base model and nothing else (docs/architecture.md, "Base models"):

1. its parameter selection, as the weight format's `Manifest` (names, shapes, groups, the
   fingerprint of the frozen rest);
2. a functional forward: outputs of the base model with given values of the selected
   parameters, differentiable in those values (`torch.func.functional_call`, no copy of the
   model per concept);
3. the function-space loss between those outputs and a task's targets, on the scale of its
   quality metric;
4. a quality metric of given selected parameters on one task's held-back data (lower is
   better for `quality_key`);
5. export of given selected parameters as a standard adapter folder a user loads without
   wgen (peft for the GAN, safetensors for a classifier's norm layers).

A family is one entry of `BASE_MODELS` (family name → "module:Class", imported on use, so
this module imports no family). A base folder (`RUN/base/`) names its family in
`base.json` ("family"; a folder without one is the GAN, the only family before it).

Tasks (`TaskData`): what a concept's parameters are trained on and judged by. For the GAN a
task is one edit's image pairs (inputs: sources, targets: edited images); for a classifier,
the images of its class subset and their labels. Arrays stay in their storage form (uint8
images, int labels) until `tensors` turns them into what `functional_forward` takes.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from wgen.core.errors import ConfigError
from wgen.core.runtime import read_json
from wgen.weights.format import Manifest

__all__ = [
    "BASE_DIR",
    "BASE_FILE",
    "BASE_MODELS",
    "BaseModel",
    "TaskData",
    "base_family",
    "load_base_model",
]

BASE_DIR = "base"  # RUN/base and GENERATOR/base: the base folder of a run or generator
BASE_FILE = "base.json"  # in every base folder: {"family": ..., "fingerprint": ..., ...}
DEFAULT_FAMILY = "gan"  # base folders written before families existed hold the GAN

# family → "module:Class" of its `BaseModel` implementation (imported on use).
BASE_MODELS: dict[str, str] = {
    "gan": "wgen.gan.base_model:GanBaseModel",
    "classifier-norm": "wgen.normzoo.base_model:NormClassifierBaseModel",
}


@dataclass
class TaskData:
    """One concept's data for its base model: what its weights train on, what judges them."""

    concept_id: str
    text: str
    train_inputs: np.ndarray
    train_targets: np.ndarray
    eval_inputs: np.ndarray
    eval_targets: np.ndarray


@runtime_checkable
class BaseModel(Protocol):
    """A frozen base model and the selection of its parameters that wgen generates."""

    family: ClassVar[str]  # its key in `BASE_MODELS`
    quality_key: ClassVar[str]  # the lower-is-better metric of `quality` that selects and ranks

    @property
    def fingerprint(self) -> str:
        """The frozen rest of the model; weights of another fingerprint never load into it."""
        ...

    def manifest(self) -> Manifest:
        """The selected parameters as the weight format stores them (one concept's vector)."""
        ...

    def parameter_names(self, keys: Sequence[str]) -> dict[str, str]:
        """Manifest key → the name `functional_forward` takes it under."""
        ...

    def functional_forward(
        self, params: Mapping[str, torch.Tensor], inputs: torch.Tensor
    ) -> torch.Tensor:
        """The base model's outputs with ``params`` (keys of `parameter_names`' values) in
        place of the selected parameters; differentiable in ``params``."""
        ...

    def function_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss the function-space term minimises, on the scale of `quality_key`."""
        ...

    def tensors(
        self, inputs: np.ndarray, targets: np.ndarray, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A task's stored arrays → the tensors `functional_forward` and `function_loss` take."""
        ...

    def task_data(self, out: Path, concept_ids: Sequence[str]) -> list[TaskData]:
        """The tasks of these concepts from run folder ``out``, sorted by concept id."""
        ...

    def quality(self, state: Mapping[str, torch.Tensor] | None, task: TaskData) -> dict[str, float]:
        """Metrics of the model with selected parameters ``state`` (manifest keys; None = the
        family's neutral start) on the task's held-back data; includes `quality_key`."""
        ...

    def export(self, state: Mapping[str, torch.Tensor], folder: Path) -> Path:
        """Write ``state`` (manifest keys) as the family's standard adapter folder."""
        ...

    def save(self, folder: Path) -> None:
        """Write the base folder (`BASE_FILE` with "family" and the frozen weights)."""
        ...

    @classmethod
    def load(cls, folder: Path, config: Any) -> BaseModel:
        """The base model of a folder `save` wrote, bound to the config sections it reads."""
        ...


def base_family(folder: Path) -> str:
    """The family a base folder holds; a one-line error if it is missing or unknown."""
    folder = Path(folder)
    meta_path = folder / BASE_FILE
    if not meta_path.exists():
        raise FileNotFoundError(
            f"base model folder {folder} lacks {BASE_FILE}; make it with `wgen collect`"
        )
    meta: dict[str, Any] = read_json(meta_path)
    family = meta.get("family", DEFAULT_FAMILY)
    if family not in BASE_MODELS:
        raise ConfigError(
            f"{meta_path}: base model family {family!r} is not one of {sorted(BASE_MODELS)}"
        )
    return family


def base_model_class(family: str) -> type:
    """The implementation of ``family`` (imported on use)."""
    module, _, name = BASE_MODELS[family].partition(":")
    return getattr(importlib.import_module(module), name)


def load_base_model(folder: Path, config: Any) -> BaseModel:
    """The base model of ``folder``, bound to the sections of ``config`` its family reads
    (the GAN: `config.lora` and `config.collect`)."""
    return base_model_class(base_family(folder)).load(Path(folder), config)
