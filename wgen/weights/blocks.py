"""Cut flat per-group weight vectors into b-blocks, normalise them, and put them back.

A weight dataset row holds G flat float32 vectors, one per layer group, of lengths
L_0 … L_{G-1} (identical across rows). The denoiser sees one block of b values at a
time, with its block index n, so a row becomes N blocks of shape (N, b):

- Split policy: each group g is cut on its own into ceil(L_g / b) consecutive blocks.
  The last block of a group is zero-padded and its padding is marked False in the
  mask. A group shorter than b therefore gives one padded block. Blocks never straddle
  two groups, so block n always holds values of one layer (the paper's per-layer
  chunking), and the same n means the same weights in every row.
- Block index n runs over all groups in order: group 0's blocks first, then group 1's.
- The inverse drops the padding and is bit-exact: the mask's True positions, read in
  row-major order, are exactly the concatenated groups.

b is a hyperparameter searched by Ray Tune, so blocks are cut when rows are read,
never stored. Normalisation statistics (`BlockStats`) are fit on training rows only
and saved beside the generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "BlockLayout",
    "BlockStats",
    "from_blocks",
    "rows_to_blocks",
    "to_blocks",
]


@dataclass(frozen=True)
class BlockLayout:
    """Where every value of every group lands in the (N, b) block array.

    Attributes:
        block_size: b, values per block.
        lengths: L_g, the flat length of each group g.
        blocks_per_group: ceil(L_g / b) for each group.
        first_block: block index n of each group's first block (its offset in n).
        n_blocks: N, the total number of blocks of one row.
        group_of_block: the group g of each block index n (length N).
    """

    block_size: int
    lengths: tuple[int, ...]
    blocks_per_group: tuple[int, ...]
    first_block: tuple[int, ...]
    n_blocks: int
    group_of_block: tuple[int, ...]

    @classmethod
    def from_lengths(cls, lengths: Sequence[int], block_size: int) -> BlockLayout:
        """Layout for groups of the given flat lengths cut into blocks of b values."""
        if block_size < 1:
            raise ValueError(f"block size b must be >= 1, got {block_size}")
        lengths = tuple(int(length) for length in lengths)
        if not lengths or min(lengths) < 1:
            raise ValueError(f"every layer group needs at least one value, got lengths {lengths}")
        per_group = tuple(math.ceil(length / block_size) for length in lengths)
        first = tuple(int(x) for x in np.cumsum((0,) + per_group[:-1]))
        group_of_block = tuple(g for g, count in enumerate(per_group) for _ in range(count))
        return cls(block_size, lengths, per_group, first, sum(per_group), group_of_block)

    @property
    def total_values(self) -> int:
        """Number of real (unpadded) values in one row: sum of L_g."""
        return sum(self.lengths)

    def mask(self) -> np.ndarray:
        """(N, b) bool: True on real values, False on the padding of each group's last block."""
        filled = np.zeros((self.n_blocks, self.block_size), dtype=bool)
        for length, first, count in zip(
            self.lengths, self.first_block, self.blocks_per_group, strict=True
        ):
            group_mask = np.zeros(count * self.block_size, dtype=bool)
            group_mask[:length] = True
            filled[first : first + count] = group_mask.reshape(count, self.block_size)
        return filled

    def block_index(self) -> np.ndarray:
        """(N,) int64: the block indices n = 0 … N-1, as the denoiser takes them."""
        return np.arange(self.n_blocks, dtype=np.int64)

    def check_vectors(self, vectors: Sequence[np.ndarray]) -> None:
        """Fail early, naming the group, when a row does not match this layout."""
        if len(vectors) != len(self.lengths):
            raise ValueError(f"expected {len(self.lengths)} layer groups, got {len(vectors)}")
        for g, (vector, length) in enumerate(zip(vectors, self.lengths, strict=True)):
            if np.ndim(vector) != 1 or len(vector) != length:
                raise ValueError(
                    f"layer group {g}: expected a flat vector of {length} values, "
                    f"got shape {np.shape(vector)}"
                )


def to_blocks(vectors: Sequence[np.ndarray], layout: BlockLayout) -> tuple[np.ndarray, np.ndarray]:
    """Cut one row's G flat vectors into (N, b) float32 blocks and their (N, b) bool mask."""
    layout.check_vectors(vectors)
    mask = layout.mask()
    blocks = np.zeros(mask.shape, dtype=np.float32)
    # Row-major order of the mask's True positions is the concatenation of the groups.
    blocks[mask] = np.concatenate([np.asarray(v, dtype=np.float32) for v in vectors])
    return blocks, mask


def rows_to_blocks(
    rows: Sequence[Sequence[np.ndarray]], layout: BlockLayout
) -> tuple[np.ndarray, np.ndarray]:
    """Cut R rows into (R, N, b) float32 blocks; the (N, b) mask is shared by all rows."""
    mask = layout.mask()
    blocks = np.zeros((len(rows),) + mask.shape, dtype=np.float32)
    for r, vectors in enumerate(rows):
        blocks[r] = to_blocks(vectors, layout)[0]
    return blocks, mask


def from_blocks(blocks: np.ndarray, layout: BlockLayout) -> list[np.ndarray]:
    """Exact inverse of `to_blocks`: (N, b) blocks back to G flat vectors, padding dropped."""
    blocks = np.asarray(blocks)
    expected = (layout.n_blocks, layout.block_size)
    if blocks.shape != expected:
        raise ValueError(f"expected blocks of shape {expected}, got {blocks.shape}")
    flat = blocks[layout.mask()]
    ends = np.cumsum(layout.lengths)[:-1]
    return [part.astype(np.float32, copy=True) for part in np.split(flat, ends)]


@dataclass
class BlockStats:
    """Per-block-index normalisation: one scalar mean and std for each block index n.

    Why per block index and scalar: each n always holds the same weights of the same
    layer (see the split policy above), so its scale is stable across rows, while
    LoRA A and B blocks differ by orders of magnitude between each other. A scalar per
    n is fit on R·b values, so it stays well estimated with the few training rows we
    have (tens of concepts × K checkpoints); a per-value (N, b) statistic would be
    fit on R values each and would mostly memorise the training mean.
    A floor on std keeps blocks that never change (e.g. always zero) finite.

    Attributes:
        mean: (N,) float32, mean of the real values of block n over the training rows.
        std: (N,) float32, their standard deviation, floored at `min_std`.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, blocks: np.ndarray, mask: np.ndarray, min_std: float = 1e-6) -> BlockStats:
        """Fit on TRAINING rows only: blocks (R, N, b), mask (N, b); padding is ignored."""
        blocks = np.asarray(blocks, dtype=np.float64)
        if blocks.ndim != 3 or blocks.shape[1:] != mask.shape:
            raise ValueError(
                f"expected blocks (R, N, b) with mask {mask.shape}, got {blocks.shape}"
            )
        weight = np.broadcast_to(mask, blocks.shape).astype(np.float64)
        count = weight.sum(axis=(0, 2))  # R · (real values in block n), never 0
        mean = (blocks * weight).sum(axis=(0, 2)) / count
        var = (((blocks - mean[None, :, None]) ** 2) * weight).sum(axis=(0, 2)) / count
        std = np.maximum(np.sqrt(var), min_std)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def _select(self, index: np.ndarray | torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std shaped to broadcast against (..., N, b) or, with `index`, (B, b)."""
        if index is None:
            return self.mean[:, None], self.std[:, None]
        index = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
        return self.mean[index][:, None], self.std[index][:, None]

    def normalise(
        self,
        blocks: np.ndarray,
        mask: np.ndarray | None = None,
        index: np.ndarray | torch.Tensor | None = None,
    ) -> np.ndarray:
        """(w - mean_n) / std_n for blocks (..., N, b), or (B, b) blocks of indices `index`.

        Padding is set back to 0 where a mask is given, so padded values carry no signal.
        """
        mean, std = self._select(index)
        out = ((np.asarray(blocks, dtype=np.float32) - mean) / std).astype(np.float32)
        return out * mask if mask is not None else out

    def denormalise(
        self,
        blocks: np.ndarray,
        mask: np.ndarray | None = None,
        index: np.ndarray | torch.Tensor | None = None,
    ) -> np.ndarray:
        """Inverse of `normalise`: w = mean_n + std_n · w_normalised."""
        mean, std = self._select(index)
        out = (np.asarray(blocks, dtype=np.float32) * std + mean).astype(np.float32)
        return out * mask if mask is not None else out

    def to_dict(self) -> dict[str, np.ndarray]:
        """Named arrays, ready for `safetensors.numpy.save_file` beside the generator."""
        return {"block_mean": self.mean.copy(), "block_std": self.std.copy()}

    @classmethod
    def from_dict(cls, arrays: dict[str, np.ndarray]) -> BlockStats:
        """Rebuild from `to_dict`'s arrays (extra keys, e.g. model weights, are ignored)."""
        return cls(
            np.asarray(arrays["block_mean"], dtype=np.float32),
            np.asarray(arrays["block_std"], dtype=np.float32),
        )

    def save(self, path: str | Path) -> Path:
        """Write the statistics as a safetensors file (no pickle)."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(self.to_dict(), str(path))
        return path

    @classmethod
    def load(cls, path: str | Path) -> BlockStats:
        """Read statistics written by `save`."""
        from safetensors.numpy import load_file

        return cls.from_dict(load_file(str(path)))
