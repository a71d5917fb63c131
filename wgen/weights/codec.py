"""Flat group vectors ⇄ the normalised b-blocks a weight generator sees: the last reversible
step of the weight format (`wgen.weights.format` → `wgen.weights.blocks` → here).

`BlockCodec.encode`/`decode` are exact inverses on numpy arrays; `decode_tensor` is the same
decode in torch, differentiable, for losses measured through the model the weights belong to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wgen.weights.blocks import BlockLayout, BlockStats, from_blocks, rows_to_blocks


@dataclass(frozen=True)
class BlockCodec:
    """Flat group vectors ⇄ the normalised b-blocks the denoiser sees (one reversible step).

    encode: cut every row into its (N, b) blocks (`wgen.weights.blocks`), subtract the centre — the
    mean training checkpoint, value by value (zeros when `DenoiserConfig.center` is off) —
    and normalise per block index with `BlockStats` fitted on the centred training blocks.
    decode: the exact inverse, back to G flat vectors.

    Why centre: the per-block-index statistics are scalars, so without it the denoiser must
    reproduce every value of the mean LoRA from the block index alone before it can model
    what a concept changes; with it, a prediction of 0 is already the mean checkpoint.

    Attributes:
        layout: blocks of b values over the manifest's groups.
        stats: per-block-index mean and std of the centred training blocks.
        center: (N, b) float32, the centre in block form (0 on padding).
    """

    layout: BlockLayout
    stats: BlockStats
    center: np.ndarray

    @classmethod
    def fit(cls, rows: list[list[np.ndarray]], layout: BlockLayout, center: bool) -> BlockCodec:
        """Fit on TRAINING rows only: validation must stay unseen."""
        if not rows:
            raise ValueError("no training rows to fit the block normalisation on")
        blocks, mask = rows_to_blocks(rows, layout)  # (R, N, b), (N, b)
        middle = blocks.mean(axis=0) if center else np.zeros(mask.shape, dtype=np.float32)
        return cls(layout, BlockStats.fit(blocks - middle, mask), middle.astype(np.float32))

    def encode(self, rows: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """R rows → (R, N, b) normalised blocks (padding 0) and the (N, b) mask."""
        blocks, mask = rows_to_blocks(rows, self.layout)
        return self.stats.normalise(blocks - self.center, mask), mask

    def decode(self, blocks: np.ndarray) -> list[np.ndarray]:
        """(N, b) normalised blocks → the G flat group vectors (the inverse of `encode`)."""
        mask = self.layout.mask()
        return from_blocks(self.stats.denormalise(blocks, mask) + self.center, self.layout)

    def decode_tensor(self, blocks: torch.Tensor) -> torch.Tensor:
        """Differentiable `decode`: (N, b) normalised blocks → ONE flat vector of all groups.

        The same arithmetic as `decode` in torch (denormalise, add the centre, drop the
        padding), so gradients reach the blocks; `wgen.weights.format.unflatten_concatenated`
        turns the vector into a state dict. The row-major order of the mask's real values is
        the groups' concatenation, exactly as `wgen.weights.blocks.from_blocks` reads it.
        """
        device, dtype = blocks.device, blocks.dtype
        tables = self._tensor_tables(device)
        values = blocks * tables["std"] + tables["mean"] + tables["center"]
        return values[tables["mask"]].to(dtype)

    def _tensor_tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The codec's arrays as tensors on ``device`` (cached: decode_tensor runs every step)."""
        cache = self.__dict__.setdefault("_tensors", {})
        if device not in cache:

            def tensor(array: np.ndarray) -> torch.Tensor:
                # a codec that came through Ray's object store holds read-only arrays
                return torch.as_tensor(np.require(array, requirements="W"), device=device)

            cache[device] = {
                "std": tensor(self.stats.std[:, None]),
                "mean": tensor(self.stats.mean[:, None]),
                "center": tensor(self.center),
                "mask": tensor(self.layout.mask()),
            }
        return cache[device]

    def to_dict(self) -> dict[str, np.ndarray]:
        """Named arrays for safetensors (and a train_loop_config)."""
        return {**self.stats.to_dict(), "block_center": self.center.copy()}

    @classmethod
    def from_dict(cls, arrays: dict[str, np.ndarray], layout: BlockLayout) -> BlockCodec:
        center = np.asarray(arrays["block_center"], dtype=np.float32)
        stats = BlockStats.from_dict(arrays)
        if center.shape != (layout.n_blocks, layout.block_size) or len(stats.mean) != len(center):
            raise ValueError(
                f"block normalisation for {len(stats.mean)} blocks of shape {center.shape[1:]}, "
                f"but the layout has {layout.n_blocks} blocks of b={layout.block_size}"
            )
        return cls(layout, stats, center)

    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file

        save_file(self.to_dict(), str(path))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, layout: BlockLayout) -> BlockCodec:
        from safetensors.numpy import load_file

        return cls.from_dict(load_file(str(path)), layout)
