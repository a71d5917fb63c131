"""The block-conditioned 1D UNet ε̂θ(w_n^t, t, n, τ(T)) over one weight block at a time.

Gong et al., "Efficient Training with Denoised Neural Weights" (ECCV 2024): a UNet of
ResBlocks and Transformer blocks denoises one block w_n of b weights; the block index n
enters as SinEnc(n, d) → MLP added to the timestep embedding in every ResBlock, and the
text embedding τ(T) enters by cross-attention.

The network knows nothing of noise schedules (the diffusion core, `wgen.diffusion`, owns
them; `wgen.generator.diffusion` passes it this network's conditions): it maps (noised block,
timestep, block index, text) to one output of the block's shape, which the core reads as
ε, x0 or v.

Made for guidance and distillation (Meng et al.) without rewriting:
- `null_text`: a learned embedding in τ's space that replaces the text where
  `drop_text` is True (classifier-free guidance training and the unconditional pass).
- `extra_cond=True`: an extra scalar condition (the guidance weight w) embedded like the
  timestep and added to the embedding; its last layer starts at zero, so a student
  built with it reproduces a teacher built without it (load with strict=False).

Layout: building blocks first (`sin_enc`, `EmbeddingMLP`, `ResBlock1D`,
`CrossAttnBlock1D`), then `Denoiser`, then `DENOISER_SIZES` and `build_denoiser`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wgen.config import DenoiserConfig

__all__ = [
    "DENOISER_SIZES",
    "CrossAttnBlock1D",
    "Denoiser",
    "DenoiserSize",
    "EmbeddingMLP",
    "ResBlock1D",
    "BlockReadout",
    "build_denoiser",
    "sin_enc",
]

# The activation everywhere: hardswish, x·relu6(x + 3)/6, the piecewise approximation of
# SiLU from MobileNetV3. Measured on this project's 2-core CPU it is 4x cheaper than SiLU
# (whose exp dominated the demo forward), with the same smooth, self-gated shape.
Activation = nn.Hardswish
act = F.hardswish

# The guidance weight w lives in roughly [0, 10]; scaled by this it spans the same range
# as integer timesteps t in [0, 1000), so one sinusoidal encoding suits both.
EXTRA_COND_SCALE = 100.0
# Width of the block readout's text MLP (as the `hyper` baseline's hidden layers).
READOUT_HIDDEN = 256


# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------


def sin_enc(x: torch.Tensor, d: int) -> torch.Tensor:
    """SinEnc(x, d): (B,) → (B, d) with [2i] = sin(x / 10000^{2i/d}), [2i+1] = cos(same).

    Exactly the paper's interleaved form, i = 0 … ⌊(d−1)/2⌋; for odd d the final cos is
    dropped. Used for the block index n, the timestep t and the extra condition.
    """
    if d < 1:
        raise ValueError(f"encoding width d must be >= 1, got {d}")
    x = x.float().reshape(-1, 1)
    i = torch.arange((d + 1) // 2, device=x.device, dtype=torch.float32)
    angle = x / torch.pow(10000.0, 2.0 * i / d)  # (B, ceil(d/2))
    return torch.stack((torch.sin(angle), torch.cos(angle)), dim=-1).flatten(1)[:, :d]


class EmbeddingMLP(nn.Module):
    """SinEnc(x, d) → Linear → act → Linear: a scalar (t, n or w) to the embedding width."""

    def __init__(self, enc_dim: int, emb_dim: int, zero_out: bool = False) -> None:
        super().__init__()
        self.enc_dim = enc_dim
        self.net = nn.Sequential(
            nn.Linear(enc_dim, emb_dim), Activation(), nn.Linear(emb_dim, emb_dim)
        )
        if zero_out:  # starts as "no effect": a new condition added to a trained model
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(sin_enc(x, self.enc_dim))


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count ≤ `groups` that divides `channels`."""
    groups = math.gcd(channels, groups)
    return nn.GroupNorm(groups, channels)


class ResBlock1D(nn.Module):
    """GroupNorm → act → Conv1d, + Linear(emb), GroupNorm → act → Conv1d, + skip.

    The embedding (timestep + block index [+ extra condition]) is projected to the
    channel count and added between the two convolutions, as in DDPM's ResBlock. It
    arrives already activated (once per forward, not in every ResBlock).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_ch, groups)
        self.conv1 = nn.Conv1d(in_ch, out_ch, kernel_size=3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = _group_norm(out_ch, groups)
        self.conv2 = nn.Conv1d(out_ch, out_ch, kernel_size=3, padding=1)
        self.skip = nn.Conv1d(in_ch, out_ch, kernel_size=1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x (B, in_ch, L), emb (B, emb_dim) → (B, out_ch, L)."""
        h = self.conv1(act(self.norm1(x)))
        h = h + self.emb_proj(emb)[:, :, None]
        h = self.conv2(act(self.norm2(h)))
        return h + self.skip(x)


class Attention(nn.Module):
    """Multi-head attention of queries (B, L, C) over a context (B or 1, S, ctx_dim)."""

    def __init__(self, channels: int, ctx_dim: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_kv = nn.Linear(ctx_dim, 2 * channels, bias=False)
        self.to_out = nn.Linear(channels, channels)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, C) → (B, heads, S, C / heads)."""
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``context_mask`` (B or 1, S) bool: True on the context entries to attend to."""
        batch, length, channels = x.shape
        q = self._split_heads(self.to_q(x))
        k, v = (self._split_heads(part) for part in self.to_kv(context).chunk(2, dim=-1))
        # A context of batch 1 (one concept for all its blocks) is broadcast, not copied.
        k, v = k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)
        mask = (
            None
            if context_mask is None
            else context_mask[:, None, None, :].expand(batch, -1, -1, -1)
        )
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # softmax(q kᵀ/√d_h) v
        return self.to_out(out.transpose(1, 2).reshape(batch, length, channels))


class CrossAttnBlock1D(nn.Module):
    """Transformer block on the block's positions: self-attention, cross-attention to the
    text tokens (how τ(T) enters, as in the paper), then an MLP; pre-norm, residual."""

    def __init__(self, channels: int, ctx_dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(channels)
        self.self_attn = Attention(channels, channels, heads)
        self.norm_cross = nn.LayerNorm(channels)
        self.cross_attn = Attention(channels, ctx_dim, heads)
        self.norm_mlp = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, mlp_ratio * channels),
            Activation(),
            nn.Linear(mlp_ratio * channels, channels),
        )

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, C, L), context (B or 1, S, ctx_dim), mask (B or 1, S) → (B, C, L)."""
        h = x.transpose(1, 2)  # (B, L, C): positions are the tokens
        normed = self.norm_self(h)
        h = h + self.self_attn(normed, normed)
        h = h + self.cross_attn(self.norm_cross(h), context, context_mask)
        h = h + self.mlp(self.norm_mlp(h))
        return h.transpose(1, 2)


class BlockReadout(nn.Module):
    """(pooled text, block index n) → the block's b values: out_n = U_n · f(τ) + c_n.

    A hypernetwork's readout, one per block: f is a small MLP of the pooled text to ``rank``
    features and U_n (rank × b), c_n (b) are learned for each of the N blocks. The UNet
    reaches block n only through SinEnc(n) in its embedding and has a few thousand weights
    to say what every block should hold for a text; the `hyper` baseline writes each weight
    from its own output unit and closed twice the gap (docs/architecture.md, "What makes the
    generator generalise"). U and c start at zero: the readout adds nothing until training moves it.
    """

    def __init__(self, text_dim: int, n_blocks: int, block_size: int, rank: int, hidden: int):
        super().__init__()
        self.feature = nn.Sequential(
            nn.Linear(text_dim, hidden), Activation(), nn.Linear(hidden, rank)
        )
        self.weight = nn.Parameter(torch.zeros(n_blocks, rank, block_size))
        self.bias = nn.Parameter(torch.zeros(n_blocks, block_size))

    def forward(self, pooled_text: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """pooled_text (B or 1, text_dim), n (B,) → (B, 1, b)."""
        feature = self.feature(pooled_text).expand(n.shape[0], -1)  # (B, rank)
        out = torch.einsum("br,brl->bl", feature, self.weight[n]) + self.bias[n]
        return out[:, None, :]


class _Level(nn.Module):
    """One resolution of the UNet: ResBlocks, then a Transformer block if enabled."""

    def __init__(
        self, in_ch: int, out_ch: int, n_res: int, size: DenoiserSize, attention: bool
    ) -> None:
        super().__init__()
        self.res = nn.ModuleList(
            ResBlock1D(in_ch if i == 0 else out_ch, out_ch, size.emb_dim, size.groups)
            for i in range(n_res)
        )
        self.attn = CrossAttnBlock1D(out_ch, size.emb_dim, size.heads) if attention else None

    def forward(
        self, h: torch.Tensor, emb: torch.Tensor, context: tuple[torch.Tensor, torch.Tensor | None]
    ) -> torch.Tensor:
        for block in self.res:
            h = block(h, emb)
        return self.attn(h, *context) if self.attn is not None else h


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenoiserSize:
    """Width and depth of the 1D UNet.

    Attributes:
        channels: channels at each resolution; len(channels) − 1 halvings of the length.
        res_blocks: ResBlocks per resolution on each path (down and up).
        attn_levels: how many of the coarsest resolutions also get a Transformer block on
            both paths; 0 = only the middle one (there is always one, so text enters).
        emb_dim: width of the timestep/index embedding and of the text tokens.
        text_tokens: a pooled τ(T) is projected to this many context tokens; with token
            states, the learned null text is a sequence of this many tokens.
        heads: attention heads.
        patch: p, weights per position after the stem: a strided conv turns the b values
            into b / p positions of channels[0] (as a ViT/DiT patch embedding), and the
            output conv gives p values per position back. p > 1 is what makes the demo
            size fast on CPU: every later layer runs on p times fewer positions.
        groups: GroupNorm groups (reduced to a divisor of the channel count).
    """

    channels: tuple[int, ...]
    res_blocks: int
    attn_levels: int
    emb_dim: int
    text_tokens: int
    heads: int
    patch: int = 1
    groups: int = 8


class Denoiser(nn.Module):
    """ε̂θ(w_n^t, t, n, τ(T)): a 1D UNet over one block of b weights (channels = 1).

    Any b works: the length is zero-padded inside to a multiple of p·2^(levels−1) and
    the output is cropped back to b (padded values are masked out of the loss anyway).
    """

    def __init__(
        self,
        size: DenoiserSize,
        text_dim: int,
        index_dim: int,
        extra_cond: bool = False,
        text_view: str = "tokens",
        text_in_emb: bool = False,
        readout: tuple[int, int, int] | None = None,
    ) -> None:
        """``readout``: (N blocks, b, rank) adds a `BlockReadout` to the output; None = off."""
        super().__init__()
        if text_view not in ("tokens", "pooled"):
            raise ValueError(f"text view must be 'tokens' or 'pooled', got {text_view!r}")
        self.size = size
        self.text_dim = text_dim
        self.index_dim = index_dim
        self.text_view = text_view
        channels = size.channels
        levels = len(channels)
        self.length_multiple = size.patch * 2 ** (levels - 1)

        # Conditions: emb = emb_t + emb_n (+ emb_w); τ(T) → text_tokens context tokens.
        self.time_mlp = EmbeddingMLP(size.emb_dim, size.emb_dim)
        self.index_mlp = EmbeddingMLP(index_dim, size.emb_dim)
        self.extra_mlp = (
            EmbeddingMLP(size.emb_dim, size.emb_dim, zero_out=True) if extra_cond else None
        )
        if text_view == "tokens":
            # Word by word: each token state is projected on its own, the null text is a
            # learned token sequence in τ's space (small random init: distinct tokens).
            self.null_text = nn.Parameter(0.02 * torch.randn(size.text_tokens, text_dim))
            self.text_proj = nn.Sequential(nn.Linear(text_dim, size.emb_dim), Activation())
        else:
            self.null_text = nn.Parameter(torch.zeros(text_dim))
            self.text_proj = nn.Sequential(
                nn.Linear(text_dim, size.emb_dim * size.text_tokens), Activation()
            )
        self.text_norm = nn.LayerNorm(size.emb_dim)
        # Pooled text in the embedding (Imagen, SDXL): the mean of the context tokens joins
        # t and n, so the text modulates every ResBlock and not only the attention layers.
        self.text_mlp = (
            nn.Sequential(
                nn.Linear(size.emb_dim, size.emb_dim), Activation(),
                nn.Linear(size.emb_dim, size.emb_dim),
            )
            if text_in_emb
            else None
        )  # fmt: skip

        def has_attention(level: int) -> bool:
            return level >= levels - size.attn_levels

        # Patchify: p consecutive weights → one position of channels[0] (p = 1: no patching).
        self.conv_in = nn.Conv1d(1, channels[0], kernel_size=size.patch, stride=size.patch)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for level, out_ch in enumerate(channels):
            in_ch = channels[max(level - 1, 0)]
            self.down.append(_Level(in_ch, out_ch, size.res_blocks, size, has_attention(level)))
            if level < levels - 1:
                self.downsample.append(nn.Conv1d(out_ch, out_ch, 3, stride=2, padding=1))
        self.mid = _Level(channels[-1], channels[-1], 1, size, attention=True)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(levels)):
            ch = channels[level]
            self.up.append(_Level(2 * ch, ch, size.res_blocks, size, has_attention(level)))
            if level > 0:
                self.upsample.append(nn.Conv1d(ch, channels[level - 1], 3, padding=1))
        self.norm_out = _group_norm(channels[0], size.groups)
        self.conv_out = nn.Conv1d(channels[0], size.patch, kernel_size=3, padding=1)
        # Zero output at init (ADM's zero_module): an x0-predicting denoiser then starts at
        # the centre, i.e. the mean training checkpoint, the strongest text-free guess, and
        # the function-space term only moves it where the GAN's output improves (as `hyper`).
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.readout = (
            None if readout is None else BlockReadout(text_dim, *readout, hidden=READOUT_HIDDEN)
        )

    def embed(
        self,
        t: torch.Tensor,
        n: torch.Tensor,
        extra_cond: torch.Tensor | None,
        pooled_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """act(emb), emb = MLP(SinEnc(t)) + MLP(SinEnc(n, d)) [+ MLP(SinEnc(w·scale))]
        [+ MLP(pooled text)]: (B, emb_dim)."""
        emb = self.time_mlp(t) + self.index_mlp(n)
        if pooled_text is not None:
            emb = emb + pooled_text
        if extra_cond is not None:
            if self.extra_mlp is None:
                raise ValueError("extra_cond given, but this denoiser was built without one")
            emb = emb + self.extra_mlp(extra_cond.float() * EXTRA_COND_SCALE)
        return act(emb)

    def _project(self, text: torch.Tensor) -> torch.Tensor:
        """τ → context tokens: (R, S, text_dim) token states → (R, S, emb_dim), or a pooled
        (R, text_dim) → (R, text_tokens, emb_dim)."""
        if self.text_view == "tokens":
            return self.text_norm(self.text_proj(text))
        tokens = self.text_proj(text).view(text.shape[0], self.size.text_tokens, -1)
        return self.text_norm(tokens)

    def _pooled_text(self, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        """MLP(mean of the attended context tokens): (B or 1, emb_dim), or None when off."""
        if self.text_mlp is None:
            return None
        if mask is None:
            return self.text_mlp(context.mean(dim=1))
        weight = mask.to(context.dtype)[:, :, None]
        return self.text_mlp((context * weight).sum(1) / weight.sum(1).clamp_min(1.0))

    def readout_text(
        self,
        text: torch.Tensor,
        drop_text: torch.Tensor | None,
        text_rows: torch.Tensor | None,
    ) -> torch.Tensor:
        """τ(T) pooled for the readout: (B or 1, text_dim), the mean of the text's token
        states (its padding left out), or the mean of the null tokens where the text is
        dropped or all zeros, as `text_context` decides for the attention."""
        text = text.to(self.null_text.dtype)
        if self.text_view == "tokens":
            present = (text.abs().sum(-1) > 0).to(text.dtype)[:, :, None]
            pooled = (text * present).sum(1) / present.sum(1).clamp_min(1.0)
            null = self.null_text.mean(0, keepdim=True)
        else:
            pooled, null = text, self.null_text[None]
        if text_rows is not None:
            pooled = pooled[text_rows]
        return torch.where(self._dropped(text, drop_text, text_rows)[:, None], null, pooled)

    @staticmethod
    def _dropped(
        text: torch.Tensor, drop_text: torch.Tensor | None, text_rows: torch.Tensor | None
    ) -> torch.Tensor:
        """Which rows read the null text: dropped (``drop_text``) or all zeros."""
        empty = text.abs().flatten(1).sum(1) == 0  # (R,)
        if text_rows is not None:
            empty = empty[text_rows]
        return empty if drop_text is None else drop_text.reshape(-1) | empty

    def text_context(
        self,
        text: torch.Tensor,
        drop_text: torch.Tensor | None,
        text_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Context tokens and their attention mask for cross-attention.

        ``text``: (R, S, text_dim) token states, zero rows as padding, or (R, text_dim)
        pooled vectors. Row r of the batch reads text ``text_rows[r]`` (None: row r reads
        text r, and R = 1 is shared by every row), so the blocks of a few concepts project
        only those few texts. The null text is used where ``drop_text`` is True and where
        the text is all zeros (so a zero tensor *is* the null condition, for any view).
        Token view: the context is [text tokens ‖ null tokens] with a mask that selects
        one of the two per row, so a batch mixing dropped and kept rows stays one tensor.
        Pooled view: the projected null replaces the projected text (no mask needed).
        """
        expected = 3 if self.text_view == "tokens" else 2
        if text.ndim != expected or text.shape[-1] != self.text_dim:
            raise ValueError(
                f"the {self.text_view!r} text view takes "
                f"{'(B, tokens, text_dim)' if expected == 3 else '(B, text_dim)'} with "
                f"text_dim={self.text_dim}, got shape {tuple(text.shape)}"
            )
        text = text.to(self.null_text.dtype)
        tokens = self._project(text)  # (R, S', emb_dim)
        null = self._project(self.null_text[None])  # (1, text_tokens, emb_dim)
        token_mask = text.abs().sum(-1) > 0 if self.text_view == "tokens" else None
        drop = self._dropped(text, drop_text, text_rows)
        if text_rows is not None:
            tokens = tokens[text_rows]
            token_mask = None if token_mask is None else token_mask[text_rows]
        rows = max(tokens.shape[0], drop.shape[0])
        if self.text_view == "pooled":
            return torch.where(drop.reshape(-1, 1, 1), null, tokens), None
        token_mask = token_mask.expand(rows, -1) & ~drop[:, None]
        null_mask = drop[:, None].expand(rows, null.shape[1])
        context = torch.cat((tokens.expand(rows, -1, -1), null.expand(rows, -1, -1)), dim=1)
        return context, torch.cat((token_mask, null_mask), dim=1)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        n: torch.Tensor,
        text: torch.Tensor,
        extra_cond: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
        text_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict for a batch of noised blocks.

        Args:
            x: (B, 1, b) noised blocks w_n^t.
            t: (B,) timesteps.
            n: (B,) block indices.
            text: τ(T) as (B or 1, S, text_dim) token states (zero rows = padding) or
                (B or 1, text_dim) pooled vectors, per the denoiser's ``text_view``; batch 1
                is shared by all B blocks (all blocks of one concept) without copying.
            extra_cond: (B,) extra scalar condition (guidance weight w), or None.
            drop_text: (B,) bool, True where the text is replaced by `null_text`.
            text_rows: (B,) int64, which row of ``text`` each block reads (None: row b
                reads text b, or the one shared text).
        Returns:
            (B, 1, b), read by the diffusion module as ε, x0 or v.
        """
        batch, _, block_size = x.shape
        # 1. Conditions: one embedding for the ResBlocks, text tokens for cross-attention.
        context = self.text_context(text.to(x.device), drop_text, text_rows)
        emb = self.embed(
            t.to(x.device).expand(batch), n.to(x.device), extra_cond, self._pooled_text(*context)
        )
        # 2. Pad the length to a multiple of 2^(levels−1) so every halving is exact.
        pad = -block_size % self.length_multiple
        h = self.conv_in(F.pad(x, (0, pad)))
        # 3. Down path: each resolution's output is kept for its skip connection.
        skips = []
        for level, stage in enumerate(self.down):
            h = stage(h, emb, context)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        # 4. Middle: ResBlock + Transformer block at the coarsest resolution.
        h = self.mid(h, emb, context)
        # 5. Up path: concatenate the skip, ResBlocks (+ attention), upsample.
        for level, stage in enumerate(self.up):
            h = stage(torch.cat((h, skips.pop()), dim=1), emb, context)
            if level < len(self.upsample):
                h = self.upsample[level](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        # 6. Output projection to p values per position, unpatchify, crop the padding.
        out = self.conv_out(act(self.norm_out(h)))  # (B, p, L / p)
        out = out.transpose(1, 2).reshape(batch, 1, -1)[:, :, :block_size]
        if self.readout is not None:  # 7. The per-block readout of the pooled text.
            pooled = self.readout_text(text.to(x.device), drop_text, text_rows)
            out = out + self.readout(pooled, n.to(x.device))
        return out


# ---------------------------------------------------------------------------------------
# Sizes and construction
# ---------------------------------------------------------------------------------------

DENOISER_SIZES: dict[str, DenoiserSize] = {
    # tests: a forward of a few blocks in about a millisecond.
    "tiny": DenoiserSize(
        channels=(8, 16), res_blocks=1, attn_levels=0, emb_dim=16, text_tokens=2, heads=2,
        patch=4, groups=4,
    ),
    # demo: all ~500 blocks (b = 64) of one concept in one forward on this 2-core CPU.
    "demo": DenoiserSize(
        channels=(16, 32), res_blocks=1, attn_levels=0, emb_dim=64, text_tokens=4, heads=2,
        patch=8, groups=4,
    ),
    # cluster: paper-like width for b = 256 on GPUs (64 → 8 positions).
    "cluster": DenoiserSize(
        channels=(64, 128, 256, 256), res_blocks=2, attn_levels=2, emb_dim=256,
        text_tokens=8, heads=8, patch=4, groups=32,
    ),
}  # fmt: skip


def build_denoiser(
    cfg: DenoiserConfig, text_dim: int, extra_cond: bool = False, n_blocks: int | None = None
) -> Denoiser:
    """The denoiser for `cfg.size` and the text encoder's width; `extra_cond` adds a w input.
    ``n_blocks`` (N of the weight layout) is needed when ``cfg.block_readout`` > 0."""
    if cfg.size not in DENOISER_SIZES:
        raise ValueError(f"unknown denoiser size {cfg.size!r}; valid: {sorted(DENOISER_SIZES)}")
    readout = None
    if cfg.block_readout > 0:
        if n_blocks is None:
            raise ValueError("denoiser.block_readout > 0 needs n_blocks, the layout's block count")
        readout = (n_blocks, cfg.block_size, cfg.block_readout)
    return Denoiser(
        DENOISER_SIZES[cfg.size],
        text_dim,
        cfg.index_dim,
        extra_cond=extra_cond,
        text_view=cfg.text,
        text_in_emb=cfg.text_in_emb,
        readout=readout,
    )
