"""A trained weight generator: text → the selected weights of a base model (a LoRA for the
base GAN), rebuilt from its own folder.

Gong et al., "Efficient Training with Denoised Neural Weights" (ECCV 2024), section on
generation: embed the concept text, draw noise for all N blocks at once, denoise them in
one batched forward per step (the paper's single direct-reconstruction step, or DDIM),
un-normalise, un-chunk, and export the result as the base model's standard adapter (a peft
LoRA for the GAN). Nothing here knows the family: the base is a `wgen.models.base.BaseModel`.

A generator folder is self-contained (docs/architecture.md, rule 7), so
``wgen generate`` needs nothing else::

    config.yaml               the whole wgen Config it was trained with (denoiser, LoRA, ...)
    denoiser.safetensors      the denoiser's weights
    block_codec.safetensors   block normalisation fitted on the training split: the centre
                              (mean training checkpoint) and per-block-index statistics
    manifest.json             the weight layout: groups, shapes, base-model fingerprint
    generator.json            text encoder name and width, whether the denoiser takes the
                              guidance weight w as an input (a distilled student,
                              `wgen.distill`), training record (epochs, metrics)
    base/                     a copy of the run's base-model folder the weights belong to
                              (base.json names its family; `wgen.models.base`)

Every Ray Train checkpoint holds such a folder (plus the optimizer state), and
``<out>/generator/`` is the final one.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from wgen.config import Config, GenerateConfig
from wgen.core.errors import InputFileError
from wgen.core.runtime import atomic_dir, read_json, write_json
from wgen.generator.diffusion import WeightDiffusion
from wgen.generator.text import (
    TextEncoder,
    build_text_encoder,
    check_concept_text,
    embed_concepts,
)
from wgen.models.base import BASE_DIR, BASE_FILE, BaseModel, load_base_model
from wgen.models.denoiser import Denoiser, build_denoiser
from wgen.weights.blocks import BlockLayout
from wgen.weights.codec import BlockCodec
from wgen.weights.format import Manifest, check_compatible, require_same_base, unflatten

FORMAT_VERSION = 2  # bump when the folder layout or the denoiser's inputs change (2: token text)
CONFIG_YAML = "config.yaml"
DENOISER_FILE = "denoiser.safetensors"
CODEC_FILE = "block_codec.safetensors"
MANIFEST_FILE = "manifest.json"
INFO_FILE = "generator.json"
# Written into every adapter folder `write_adapter` makes (what made it: text, base), so a
# later --out to the same folder knows it may replace it, whatever the family's own files.
ADAPTER_MARK = "wgen_generated.json"

# What a generator folder must hold, and why (quoted in the error for an incomplete folder).
GENERATOR_FILES: dict[str, str] = {
    CONFIG_YAML: "the wgen config it was trained with",
    DENOISER_FILE: "the denoiser's weights",
    CODEC_FILE: "the block normalisation: centre and per-block statistics",
    MANIFEST_FILE: "the weight layout and base-model fingerprint",
    INFO_FILE: "the text encoder and the training record",
    # the family's own files beside it are checked by its `load` (`GeneratorFolderError`)
    f"{BASE_DIR}/{BASE_FILE}": "the base model the weights belong to, and its family",
}


class GeneratorFolderError(FileNotFoundError):
    """A generator folder that is absent or lacks files."""


def missing_generator_files(folder: Path) -> list[str]:
    return [name for name in GENERATOR_FILES if not (Path(folder) / name).is_file()]


def check_generator_folder(folder: Path) -> None:
    """Raise `GeneratorFolderError` naming what is missing and what the folder should hold."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GeneratorFolderError(
            f"no generator folder at {folder}; make one with `wgen train --out RUN` "
            "(it writes RUN/generator)"
        )
    missing = missing_generator_files(folder)
    if missing:
        expected = "; ".join(f"{name} ({why})" for name, why in GENERATOR_FILES.items())
        raise GeneratorFolderError(
            f"generator folder {folder} is incomplete: missing {missing}. A generator folder "
            f"holds: {expected}. Re-export it with `wgen train --out RUN`."
        )


@dataclass
class WeightGenerator:
    """The trained denoiser with everything needed to turn a text into a state dict of the
    base model's selected parameters.

    Attributes:
        config: the Config it was trained with (the denoiser section, and the sections the
            base model's family reads).
        denoiser: ε̂θ, in eval mode.
        codec: the b-blocks and their normalisation (`wgen.generator.dataset.BlockCodec`).
        manifest: the weight layout the blocks un-chunk into.
        text_encoder: name of τ (`wgen.generator.text.build_text_encoder`); text_dim is its width.
        base: the base model the generated weights are for (its fingerprint is the manifest's).
        info: the training record (epoch, metrics, history), written to generator.json.
    """

    config: Config
    denoiser: Denoiser
    codec: BlockCodec
    manifest: Manifest
    text_encoder: str
    text_dim: int
    base: BaseModel
    info: dict[str, Any] = field(default_factory=dict)
    diffusion: WeightDiffusion = field(init=False, repr=False)
    _encoder: TextEncoder | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_compatible(self.manifest, self.base.fingerprint)
        if self.codec.layout != self.layout:
            raise ValueError(
                f"the block codec cuts {self.codec.layout.n_blocks} blocks of "
                f"b={self.codec.layout.block_size}, but the manifest and denoiser.block_size "
                f"give {self.layout.n_blocks} blocks of b={self.layout.block_size}"
            )
        self.denoiser.eval()
        self.diffusion = WeightDiffusion(self.config.denoiser)

    @property
    def layout(self) -> BlockLayout:
        return BlockLayout.from_lengths(
            self.manifest.group_lengths, self.config.denoiser.block_size
        )

    @property
    def guidance_input(self) -> bool:
        """A w-conditioned student (`wgen.distill`): w is its input, one pass per step."""
        return self.denoiser.extra_mlp is not None

    @property
    def fingerprint(self) -> str:
        """The base model this generator's weights belong to."""
        return self.manifest.fingerprint

    def check_base(self, fingerprint: str) -> None:
        """Refuse a base model (or weight dataset) of another fingerprint, naming both."""
        require_same_base(fingerprint, self.fingerprint, "this weight generator")

    # -- generation ---------------------------------------------------------------------

    @property
    def encoder(self) -> TextEncoder:
        """τ, built on first use (seconds) and kept for later calls."""
        if self._encoder is None:
            self._encoder = build_text_encoder(self.text_encoder)
            if self._encoder.dim != self.text_dim:
                raise ValueError(
                    f"text encoder {self.text_encoder!r} gives {self._encoder.dim}-d vectors, "
                    f"the generator was trained on {self.text_dim}-d"
                )
        return self._encoder

    def embed(self, text: str) -> np.ndarray:
        """τ(T) of one concept text as the denoiser reads it (`DenoiserConfig.text`): a
        (text_dim,) pooled vector or (tokens, text_dim) token states. Empty text is a ValueError."""
        view = self.config.denoiser.text
        return embed_concepts(self.encoder, [check_concept_text(text)], view)[text.strip()]

    def generate_config(
        self, steps: int | None = None, seed: int | None = None, guidance: float | None = None
    ) -> GenerateConfig:
        """The config's sampling settings with `steps` / `seed` / `guidance` (w) overridden
        where given."""
        default = self.config.generate
        gen = dataclasses.replace(
            default,
            steps=default.steps if steps is None else steps,
            seed=default.seed if seed is None else seed,
            guidance=default.guidance if guidance is None else guidance,
        )
        if gen.steps < 1:
            raise ValueError(f"steps must be >= 1 (1 = the single direct step), got {gen.steps}")
        if gen.guidance < 0:
            raise ValueError(f"guidance weight w must be >= 0 (0 = unguided), got {gen.guidance}")
        return gen

    @torch.no_grad()
    def generate_from_embedding(
        self,
        embedding: np.ndarray,
        steps: int | None = None,
        seed: int | None = None,
        guidance: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """τ(T) (as `embed` gives it; zeros = the null text) → the selected parameters' state
        dict (manifest keys): all N blocks in one batched forward per step (guided:
        conditional and null halves in that one forward; a w-student: w as its input)."""
        layout = self.layout
        device = next(self.denoiser.parameters()).device
        n = torch.from_numpy(layout.block_index()).to(device)
        text = torch.as_tensor(np.asarray(embedding, dtype=np.float32))[None].to(device)
        if text.shape[-1] != self.text_dim:
            raise ValueError(f"embedding of width {text.shape[-1]}, expected {self.text_dim}")
        gen = self.generate_config(steps, seed, guidance)
        blocks = self.diffusion.sample(
            self.denoiser, n, text, layout.block_size, gen, self.guidance_input
        )
        return unflatten(self.codec.decode(blocks[:, 0].cpu().numpy()), self.manifest)

    def generate(
        self,
        text: str,
        steps: int | None = None,
        seed: int | None = None,
        guidance: float | None = None,
    ) -> tuple[dict[str, torch.Tensor], float]:
        """Text → (selected parameters' state dict, seconds for embedding + denoising +
        un-chunking).

        The text encoder is loaded before the clock starts (a one-off cost per process).
        """
        check_concept_text(text)
        self.encoder  # noqa: B018 - load τ outside the timed part
        start = time.perf_counter()
        state = self.generate_from_embedding(self.embed(text), steps, seed, guidance)
        return state, time.perf_counter() - start

    def write_adapter(
        self,
        text: str,
        out_dir: Path,
        steps: int | None = None,
        seed: int | None = None,
        guidance: float | None = None,
    ) -> tuple[Path, float]:
        """Generate the weights for ``text`` and write them as the base model's adapter
        folder (`BaseModel.export`; atomically).

        Returns the folder and the generation seconds. Refuses to replace a non-empty folder
        that it did not write, so a mistyped --out never deletes someone's files.
        """
        out_dir = Path(out_dir)
        # peft's adapter_config.json: a GAN adapter written before the mark existed
        marks = (ADAPTER_MARK, "adapter_config.json")
        if (
            out_dir.exists()
            and any(out_dir.iterdir())
            and not any((out_dir / mark).exists() for mark in marks)
        ):
            raise FileExistsError(
                f"{out_dir} exists and is not an adapter folder; choose an empty or new folder"
            )
        state, seconds = self.generate(text, steps, seed, guidance)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(out_dir) as tmp:
            self.base.export(state, tmp)
            write_json(
                tmp / ADAPTER_MARK,
                {"text": text, "family": self.base.family, "base_fingerprint": self.fingerprint},
            )
        return out_dir, seconds

    # -- folder -------------------------------------------------------------------------

    def save(self, folder: Path) -> Path:
        """Write the folder described in the module docstring (into an existing/new folder)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder / CONFIG_YAML)
        state = {k: v.detach().cpu().contiguous() for k, v in self.denoiser.state_dict().items()}
        save_file(state, str(folder / DENOISER_FILE))
        self.codec.save(folder / CODEC_FILE)
        (folder / MANIFEST_FILE).write_text(self.manifest.to_json())
        self.base.save(folder / BASE_DIR)
        write_json(
            folder / INFO_FILE,
            {
                "format_version": FORMAT_VERSION,
                "text_encoder": self.text_encoder,
                "text_dim": self.text_dim,
                "guidance_input": self.guidance_input,
                "block_size": self.layout.block_size,
                "n_blocks": self.layout.n_blocks,
                "base_fingerprint": self.fingerprint,
                "info": self.info,
            },
        )
        return folder

    @classmethod
    def load(cls, folder: Path) -> WeightGenerator:
        """Rebuild a generator from its folder; a missing file is a `GeneratorFolderError`."""
        folder = Path(folder)
        if not (folder / INFO_FILE).is_file():
            check_generator_folder(folder)  # names everything that is missing
        # The version before the other files: an older folder may lack files this one needs.
        meta = read_json(folder / INFO_FILE)
        if meta.get("format_version") != FORMAT_VERSION:
            raise InputFileError(
                folder / INFO_FILE,
                f"generator format {meta.get('format_version')}, this wgen reads {FORMAT_VERSION}",
                "train it again with this version (wgen train --out RUN --force)",
            )
        check_generator_folder(folder)
        config = Config.load(folder / CONFIG_YAML)
        manifest = Manifest.from_json((folder / MANIFEST_FILE).read_text())
        layout = BlockLayout.from_lengths(manifest.group_lengths, config.denoiser.block_size)
        denoiser = build_denoiser(
            config.denoiser,
            meta["text_dim"],
            extra_cond=meta.get("guidance_input", False),  # absent: written before students
            n_blocks=layout.n_blocks,
        )
        denoiser.load_state_dict(load_file(str(folder / DENOISER_FILE)))
        try:
            base = load_base_model(folder / BASE_DIR, config)
        except FileNotFoundError as err:  # a file of the family's own (weights) is missing
            raise GeneratorFolderError(f"generator folder {folder} is incomplete: {err}") from None
        return cls(
            config=config,
            denoiser=denoiser,
            codec=BlockCodec.load(folder / CODEC_FILE, layout),
            manifest=manifest,
            text_encoder=meta["text_encoder"],
            text_dim=meta["text_dim"],
            base=base,
            info=meta.get("info", {}),
        )
