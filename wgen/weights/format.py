"""The weight format: a model's selected parameters ⇄ one flat vector per layer group.

The reversible first half of every weight generator's data path (the LoRA denoiser and
p-diff)::

    state dict ──select──► Manifest ──flatten──► one float32 vector per group
    state dict ◄────────── unflatten ◄─────────┘

`wgen.weights.blocks` owns the second half (cutting the vectors into b-blocks and normalising
them) and reads group lengths from the `Manifest`. Every step has an exact inverse; the
round-trip tests prove nothing is lost.

Selection. A `Selection` picks parameters by name with regular expressions, so it works on
any ``nn.Module``: for LoRA, the whole `wgen.gan.lora.trainable_state_dict` (LoRA A/B and the
trained norms) is passed and `Selection()` takes all of it; for p-diff, e.g.
``Selection.last_layers(model, 2)`` takes the last two layers of a classifier.

Grouping policy (the weight dataset's "group i = layer i"). A tensor's group is the module
that owns it: its key without the final parameter name (``.weight``, ``.bias``) and, for
peft LoRA, without the ``.lora_A`` / ``.lora_B`` sub-module, so one adapted layer's A and
B form one group (``down.0.conv``), a norm's weight and bias form another
(``down.0.norm``), and a plain layer's weight and bias a third (``net.4``). Groups are
ordered by their first tensor in the state dict, that is, the model's parameter order;
within a group, tensors keep that order too (A before B, weight before bias).

Precision. Vectors are float32; the source tensors may be float32, float16 or bfloat16
(all exact in float32) and `unflatten` restores that dtype, so the round trip is
bit-exact. float64 is refused rather than silently rounded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

FORMAT_VERSION = 1  # bump when the JSON layout of a Manifest changes
# dtypes that float32 holds exactly, so flatten → unflatten is bit-exact
_EXACT_IN_FLOAT32 = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_PEFT_SUBMODULE = re.compile(r"\.lora_[AB]$")

Vector = np.ndarray | torch.Tensor


class WeightFormatError(ValueError):
    """Weights that do not fit a manifest: other keys, shapes, lengths or base model."""


# ---------------------------------------------------------------------------------------
# Selection and grouping
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Parameters whose name any ``include`` pattern finds (``re.search``) and no ``exclude`` does."""

    include: tuple[str, ...] = (".*",)
    exclude: tuple[str, ...] = ()

    def matches(self, name: str) -> bool:
        return any(re.search(p, name) for p in self.include) and not any(
            re.search(p, name) for p in self.exclude
        )

    @classmethod
    def last_layers(cls, model: nn.Module, n: int) -> Selection:
        """The parameters of the last ``n`` modules that own parameters (p-diff's choice)."""
        owners = [
            name
            for name, m in model.named_modules()
            if next(m.parameters(recurse=False), None) is not None
        ]
        if not 0 < n <= len(owners):
            raise WeightFormatError(f"asked for the last {n} layers of a model with {len(owners)}")
        return cls(include=tuple(f"^{re.escape(name)}\\.[^.]+$" for name in owners[-n:]))


def group_name(key: str) -> str:
    """The layer a tensor belongs to: its key without the parameter name and peft's A/B."""
    owner = key.rsplit(".", 1)[0] if "." in key else key
    return _PEFT_SUBMODULE.sub("", owner)


# ---------------------------------------------------------------------------------------
# The manifest
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One tensor inside a group's flat vector: values [offset, offset + numel)."""

    key: str
    shape: tuple[int, ...]
    offset: int
    numel: int


@dataclass(frozen=True)
class Group:
    """One layer's selected tensors, flattened one after another into one vector."""

    name: str
    entries: tuple[Entry, ...]

    @property
    def numel(self) -> int:
        return sum(e.numel for e in self.entries)


@dataclass
class Manifest:
    """The layout of a weight vector set: groups, their tensors, the base model they fit.

    It travels with the weight dataset (and with a trained generator), so any reader can
    cut, rebuild and check weights without the model that produced them.
    """

    groups: list[Group]
    fingerprint: str  # the base model these weights belong to (gan.fingerprint for LoRA)
    dtype: str  # torch dtype name of the original tensors, restored by unflatten
    selection: Selection = field(default_factory=Selection)

    @property
    def total_numel(self) -> int:
        return sum(g.numel for g in self.groups)

    @property
    def group_lengths(self) -> list[int]:
        """L_g, the flat length of every group (what `wgen.weights.blocks.BlockLayout` cuts)."""
        return [g.numel for g in self.groups]

    @property
    def keys(self) -> list[str]:
        return [e.key for g in self.groups for e in g.entries]

    def to_json(self) -> str:
        return json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "fingerprint": self.fingerprint,
                "dtype": self.dtype,
                "selection": asdict(self.selection),
                "total_numel": self.total_numel,
                "groups": [
                    {
                        "name": g.name,
                        "entries": [[e.key, list(e.shape), e.offset, e.numel] for e in g.entries],
                    }
                    for g in self.groups
                ],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format_version") != FORMAT_VERSION:
            raise WeightFormatError(
                f"manifest format {data.get('format_version')}, this wgen reads {FORMAT_VERSION}"
            )
        groups = [
            Group(g["name"], tuple(Entry(k, tuple(s), o, n) for k, s, o, n in g["entries"]))
            for g in data["groups"]
        ]
        selection = Selection(**{k: tuple(v) for k, v in data["selection"].items()})
        manifest = cls(groups, data["fingerprint"], data["dtype"], selection)
        if manifest.total_numel != data["total_numel"]:
            raise WeightFormatError(
                f"corrupt manifest: groups hold {manifest.total_numel} values, header says {data['total_numel']}"
            )
        return manifest


def _common_dtype(state_dict: Mapping[str, torch.Tensor], keys: list[str]) -> str:
    """The one dtype of the selected tensors; refuse mixes and dtypes float32 cannot hold."""
    dtypes = {str(state_dict[k].dtype).removeprefix("torch.") for k in keys}
    if len(dtypes) != 1 or not dtypes <= _EXACT_IN_FLOAT32.keys():
        raise WeightFormatError(
            f"selected tensors have dtypes {sorted(dtypes)}; need one of {sorted(_EXACT_IN_FLOAT32)}"
        )
    return dtypes.pop()


def build_manifest(
    state_dict: Mapping[str, torch.Tensor], selection: Selection, fingerprint: str
) -> Manifest:
    """The manifest of ``selection`` applied to ``state_dict`` (grouped as the module docstring says)."""
    keys = [k for k in state_dict if selection.matches(k)]
    if not keys:
        raise WeightFormatError(f"{selection} selects none of {len(state_dict)} tensors")
    entries: dict[str, list[Entry]] = {}  # insertion order = first appearance = parameter order
    for key in keys:
        group = entries.setdefault(group_name(key), [])
        offset = sum(e.numel for e in group)
        tensor = state_dict[key]
        group.append(Entry(key, tuple(tensor.shape), offset, tensor.numel()))
    groups = [Group(name, tuple(group)) for name, group in entries.items()]
    return Manifest(groups, fingerprint, _common_dtype(state_dict, keys), selection)


def cpu_copy(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies of a state dict's tensors (never views of the model).

    What a snapshot, a checkpoint or a safetensors file needs: later training does not change
    it, safetensors accepts it (it refuses views), and it does not hold accelerator memory.
    """
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}


def require_same_base(expected: str, found: str, what: str) -> None:
    """Refuse weights made for another base model, naming both fingerprints."""
    if expected != found:
        raise WeightFormatError(
            f"{what} was made for base model {found}, but this base model is {expected}"
        )


def check_compatible(manifest: Manifest, fingerprint: str) -> None:
    """Raise unless ``manifest``'s weights belong to the base model with ``fingerprint``."""
    require_same_base(fingerprint, manifest.fingerprint, "the weight manifest")


# ---------------------------------------------------------------------------------------
# Flatten and unflatten
# ---------------------------------------------------------------------------------------


def flatten(state_dict: Mapping[str, torch.Tensor], manifest: Manifest) -> list[np.ndarray]:
    """One float32 vector per group, the group's tensors concatenated in manifest order.

    ``state_dict`` may hold more than the manifest selects (e.g. a whole model's).
    """
    vectors = []
    for group in manifest.groups:
        parts = []
        for entry in group.entries:
            if entry.key not in state_dict:
                raise WeightFormatError(f"state dict lacks {entry.key!r} (group {group.name})")
            tensor = state_dict[entry.key]
            if tuple(tensor.shape) != entry.shape:
                raise WeightFormatError(
                    f"{entry.key}: shape {tuple(tensor.shape)}, manifest says {entry.shape}"
                )
            parts.append(tensor.detach().to("cpu", torch.float32).reshape(-1))
        vectors.append(torch.cat(parts).numpy())
    return vectors


def _as_float32(vector: Vector) -> torch.Tensor:
    """A flat float32 CPU tensor from a numpy array or a tensor (a generator's output)."""
    if isinstance(vector, torch.Tensor):
        return vector.detach().to("cpu", torch.float32).reshape(-1)
    # writable too: a row read from Parquet or Ray's object store is read-only (torch warns)
    return torch.from_numpy(np.require(vector, np.float32, requirements=["C", "W"])).reshape(-1)


def _numel(vector: Vector) -> int:
    return vector.numel() if isinstance(vector, torch.Tensor) else int(np.size(vector))


def _check_vectors(vectors: Sequence[Vector], manifest: Manifest) -> None:
    if len(vectors) != len(manifest.groups):
        raise WeightFormatError(f"got {len(vectors)} vectors for {len(manifest.groups)} groups")
    for vector, group in zip(vectors, manifest.groups, strict=True):
        if _numel(vector) != group.numel:
            raise WeightFormatError(
                f"group {group.name}: vector of {_numel(vector)} values, manifest says {group.numel}"
            )


def unflatten(vectors: Sequence[Vector], manifest: Manifest) -> dict[str, torch.Tensor]:
    """The exact inverse of `flatten`: a state dict in the manifest's key order and dtype."""
    _check_vectors(vectors, manifest)
    dtype = _EXACT_IN_FLOAT32[manifest.dtype]
    state = {}
    for vector, group in zip(vectors, manifest.groups, strict=True):
        flat = _as_float32(vector)
        for e in group.entries:
            state[e.key] = flat[e.offset : e.offset + e.numel].reshape(e.shape).to(dtype).clone()
    return state


def unflatten_concatenated(flat: torch.Tensor, manifest: Manifest) -> dict[str, torch.Tensor]:
    """Differentiable `unflatten` of ONE vector holding every group back to back.

    The tensors are views of ``flat`` (no copy, no detach), so a loss on a model run with
    them (`torch.func.functional_call`) back-propagates into whatever produced ``flat`` —
    the generator's function-space term. Values stay in ``flat``'s dtype and device.
    """
    if flat.ndim != 1 or flat.numel() != manifest.total_numel:
        raise WeightFormatError(
            f"expected one flat vector of {manifest.total_numel} values, got shape {tuple(flat.shape)}"
        )
    state, start = {}, 0
    for group in manifest.groups:
        for e in group.entries:
            state[e.key] = flat[start + e.offset : start + e.offset + e.numel].reshape(e.shape)
        start += group.numel
    return state
