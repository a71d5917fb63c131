"""The base-model family "classifier-norm": a frozen ConvNet-3 whose norm layers wgen generates.

The five things wgen needs of a base model (`wgen.models.base.BaseModel`), for a digit
classifier:

1. selection: the affine weight and bias of every BatchNorm layer (``norm1``, ``norm2``,
   ``norm3``; 2 × (w + 2w + 2w) values for width w); everything else (convolutions, head, the
   BatchNorm running statistics) is the frozen base, hashed into the fingerprint
   (`wgen.pdiff.zoo.base_fingerprint`);
2. functional forward: the classifier in eval mode (BatchNorm on its frozen running
   statistics) run by `torch.func.functional_call` with given norm values → 10 logits;
3. function loss: cross-entropy in bits (natural log / ln 2). Why cross-entropy rather than a
   smooth error such as 1 − p(label): it is what every checkpoint of the zoo was trained
   with, so the function-space term pulls a generated start toward the same optimum, and it
   keeps a gradient where a prediction is confidently wrong (1 − p saturates there, exactly
   where a poor start needs the push). Why bits: a wrong argmax has p(label) ≤ 1/2, hence
   −log₂ p(label) ≥ 1, so the loss bounds the error from above on its own scale;
4. quality: ``error`` (1 − accuracy, lower is better; `quality_key`) and ``accuracy`` of the
   10-way argmax on the concept's held-back images, which are the images of its classes
   only, and the loss on them;
5. export: ``norms.safetensors`` (the norm parameters under the classifier's own names) and
   ``norms.json`` (family, base fingerprint, architecture): a user loads them into the base
   classifier with ``model.load_state_dict(load_file("norms.safetensors"), strict=False)``,
   without wgen.

A task (`TaskData`) is one class subset (`wgen.normzoo.concepts`): its training images are
the digits' training-split images of those classes, its held-back images the held-out-split
images of those classes (`wgen.pdiff.data.load_images`, split by the seed recorded in
``base.json``), so a concept's data follow from its classes and that seed alone.

The base folder: ``base.json`` ("family": "classifier-norm", the fingerprint, the
architecture, the digits split, how the base was trained) and ``classifier.safetensors``
(the whole state dict, BatchNorm buffers included).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from wgen.config import PdiffConfig
from wgen.core.errors import InputFileError
from wgen.core.runtime import read_json, write_json
from wgen.models.base import BASE_FILE, TaskData
from wgen.models.classifiers import ImageSpec, build_classifier
from wgen.normzoo.concepts import CONCEPTS_FILE, load_concepts
from wgen.pdiff.data import ImageData, load_images
from wgen.pdiff.zoo import base_fingerprint, parameters
from wgen.weights.format import Manifest, Selection, WeightFormatError, build_manifest, flatten

FAMILY = "classifier-norm"
CLASSIFIER = "convnet"  # `wgen.models.classifiers.CLASSIFIERS` key: ConvNet-3
NORM_LAYERS = Selection(include=(r"^norm\d+\.(weight|bias)$",))  # every BatchNorm's affine
WEIGHTS_FILE = "classifier.safetensors"  # in the base folder: the whole state dict
EXPORT_WEIGHTS = "norms.safetensors"  # in an export folder: the norm parameters
EXPORT_META = "norms.json"  # ... and what they fit


@functools.lru_cache(maxsize=4)
def digits(seed: int, heldout_fraction: float) -> ImageData:
    """scikit-learn's digits split into train and held-out (stratified, seeded); cached, as
    every task of a process reads the same split."""
    return load_images(PdiffConfig(seed=seed, heldout_fraction=heldout_fraction))


class NormClassifierBaseModel:
    """A frozen ConvNet-3 on the digits; wgen generates its norm layers (module docstring)."""

    family: ClassVar[str] = FAMILY
    quality_key: ClassVar[str] = "error"

    def __init__(
        self,
        model: nn.Module,
        width: int,
        split: tuple[int, float],
        info: dict[str, Any] | None = None,
    ) -> None:
        """``model``: the trained classifier (frozen here: eval mode, no gradients);
        ``width``: its width; ``split``: (seed, held-out fraction) of the digits' split;
        ``info``: how it was made (kept in ``base.json``)."""
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.width = width
        self.split = (int(split[0]), float(split[1]))
        self.info = dict(info or {})
        self._fingerprint = base_fingerprint(self.model, NORM_LAYERS)
        self._manifest = build_manifest(parameters(self.model), NORM_LAYERS, self._fingerprint)

    # -- what it is ---------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def manifest(self) -> Manifest:
        return self._manifest

    def parameter_names(self, keys: Sequence[str]) -> dict[str, str]:
        """Manifest keys are the classifier's own parameter names."""
        unknown = sorted(set(keys) - set(self._manifest.keys))
        if unknown:
            raise WeightFormatError(f"{unknown} are not norm parameters of the base classifier")
        return {key: key for key in keys}

    def state(self) -> dict[str, torch.Tensor]:
        """The base's own norm values (manifest keys): the start every concept fine-tunes."""
        own = parameters(self.model)
        return {key: own[key].detach().clone() for key in self._manifest.keys}

    def images(self) -> ImageData:
        """The digits, split as the base was trained (its training part only trained it)."""
        return digits(*self.split)

    # -- running it -----------------------------------------------------------------------

    def functional_forward(
        self, params: Mapping[str, torch.Tensor], inputs: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, 10) of the frozen classifier with ``params`` as its norm parameters.
        The classifier follows the inputs to their device, so callers never move it."""
        if self.device != inputs.device:
            self.model.to(inputs.device)
        return torch.func.functional_call(self.model, dict(params), (inputs,))

    def function_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy in bits: an upper bound of the error (module docstring, 3)."""
        return F.cross_entropy(outputs, targets) / math.log(2.0)

    def tensors(
        self, inputs: np.ndarray, targets: np.ndarray, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, 1, H, W) or (N, H, W), float in [0, 1] or uint8 in [0, 255], and int
        labels → float32 images (N, 1, H, W) and int64 labels on ``device``."""
        # a copy: arrays from Ray's object store are read-only, which torch warns about
        x = torch.from_numpy(np.array(inputs))
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.ndim == 3:
            x = x[:, None]
        y = torch.from_numpy(np.array(targets)).long()
        return x.to(device), y.to(device)

    def task_data(self, out: Path, concept_ids: Sequence[str]) -> list[TaskData]:
        """The class-subset tasks of these concepts of run folder ``out``, by concept id."""
        path = Path(out) / CONCEPTS_FILE
        if not path.exists():
            raise InputFileError(path, "missing", "build the zoo with `wgen.normzoo.zoo`")
        concepts = {c.id: c for c in load_concepts(path)}
        unknown = sorted(set(concept_ids) - set(concepts))
        if unknown:
            raise InputFileError(path, f"lists no concepts {unknown}")
        data = self.images()
        y_train, y_heldout = data.y_train.numpy(), data.y_heldout.numpy()
        tasks = []
        for concept_id in sorted(concept_ids):
            concept = concepts[concept_id]
            train = np.isin(y_train, concept.classes)
            held = np.isin(y_heldout, concept.classes)
            tasks.append(
                TaskData(
                    concept_id,
                    concept.text,
                    data.x_train.numpy()[train],
                    y_train[train],
                    data.x_heldout.numpy()[held],
                    y_heldout[held],
                )
            )
        return tasks

    @torch.no_grad()
    def quality(self, state: Mapping[str, torch.Tensor] | None, task: TaskData) -> dict[str, float]:
        """``error``, ``accuracy`` (10-way argmax) and ``loss`` (bits) on the task's held-back
        images; ``state`` None = the base's own norm values."""
        params = self.state() if state is None else self._checked(state)
        params = {k: v.to(self.device, torch.float32) for k, v in params.items()}
        x, y = self.tensors(task.eval_inputs, task.eval_targets, self.device)
        logits = self.functional_forward(params, x)
        accuracy = int((logits.argmax(dim=1) == y).sum()) / len(y)  # exact, not float32
        loss = float(self.function_loss(logits, y))
        return {"error": 1.0 - accuracy, "accuracy": accuracy, "loss": loss}

    # -- files ------------------------------------------------------------------------------

    def _checked(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` restricted to the manifest's keys, each of its shape (else the weight
        format's one-line error, `flatten`'s own check)."""
        flatten(state, self._manifest)
        return {key: state[key] for key in self._manifest.keys}

    def export(self, state: Mapping[str, torch.Tensor], folder: Path) -> Path:
        """``norms.safetensors`` + ``norms.json`` in ``folder`` (module docstring, 5),
        checked to load back into a copy of the base classifier as a user loads them."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        dtype = getattr(torch, self._manifest.dtype)
        tensors = {
            k: v.detach().to("cpu", dtype).contiguous() for k, v in self._checked(state).items()
        }
        save_file(tensors, str(folder / EXPORT_WEIGHTS), metadata={"fingerprint": self.fingerprint})
        write_json(
            folder / EXPORT_META,
            {
                "family": self.family,
                "fingerprint": self.fingerprint,
                "classifier": CLASSIFIER,
                "width": self.width,
                "keys": list(tensors),
                "load": "model.load_state_dict(safetensors.torch.load_file("
                f"'{EXPORT_WEIGHTS}'), strict=False) on the base classifier",
            },
        )
        loaded = copy.deepcopy(self.model).load_state_dict(
            load_file(str(folder / EXPORT_WEIGHTS)), strict=False
        )
        if loaded.unexpected_keys:  # pragma: no cover - the keys were checked above
            raise WeightFormatError(f"{folder}: {loaded.unexpected_keys} do not load")
        return folder

    def save(self, folder: Path) -> None:
        """``base.json`` and ``classifier.safetensors`` (module docstring)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        spec = self.images().spec
        write_json(
            folder / BASE_FILE,
            {
                "family": self.family,
                "fingerprint": self.fingerprint,
                "classifier": CLASSIFIER,
                "width": self.width,
                "image": {"channels": spec.channels, "size": spec.size, "classes": spec.classes},
                "selection": list(NORM_LAYERS.include),
                "digits": {"seed": self.split[0], "heldout_fraction": self.split[1]},
                "info": self.info,
            },
        )

    @classmethod
    def load(cls, folder: Path, config: Any = None) -> NormClassifierBaseModel:
        """The base of ``folder``; ``config`` is not read (everything is in ``base.json``).
        A classifier whose bytes no longer give the recorded fingerprint is refused."""
        folder = Path(folder)
        missing = [name for name in (BASE_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"base model folder {folder} lacks {missing}")
        meta = read_json(folder / BASE_FILE)
        image = ImageSpec(**meta["image"])
        model = build_classifier(meta["classifier"], image, meta["width"], seed=0)
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        digits_split = (meta["digits"]["seed"], meta["digits"]["heldout_fraction"])
        base = cls(model, meta["width"], digits_split, meta.get("info"))
        if base.fingerprint != meta["fingerprint"]:
            raise InputFileError(
                folder / WEIGHTS_FILE,
                f"damaged: its weights hash to {base.fingerprint}, {BASE_FILE} records "
                f"{meta['fingerprint']}",
                "rebuild the zoo into a new folder",
            )
        return base
