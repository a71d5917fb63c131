"""p-diff's networks (Wang et al. 2024, "Neural Network Diffusion"): a 1D convolutional
autoencoder over a model's flattened parameters and a 1D convolutional denoiser over its
latents.

The autoencoder follows p-diff: Z = f_enc(V + ξ_V), V' = f_dec(Z + ξ_Z), four conv layers
with InstanceNorm and LeakyReLU on each side. Like p-diff's latest code it folds the
(standardised) vector into tokens of ``token`` values, which become the conv channels, so
convolutions run over tokens rather than single values (a 3.5K-parameter MLP is 220 tokens
of 16, not 3.5K positions: 16x less compute). Convolutions are translation-equivariant, but
every parameter position means something different, so both sides add a learned position
embedding.

The noise ξ_V, ξ_Z is the training loop's business (`wgen.pdiff.fit`); the denoiser knows
nothing of schedules (the diffusion core, `wgen.diffusion`, owns them) and takes (z_t, t)
only: it is unconditional.

Layout: building blocks (`down_up_plan`), then `ParamAutoencoder`, then `LatentDenoiser`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wgen.models.denoiser import Activation, EmbeddingMLP, ResBlock1D, act

__all__ = ["LatentDenoiser", "ParamAutoencoder", "fold_size"]

# InstanceNorm over a handful of positions throws the values away (over 2 positions every
# channel becomes ±1), so the fold shrinks until the latent keeps at least this many.
MIN_LATENT_LENGTH = 8


def fold_size(numel: int, token: int, downsample: int) -> int:
    """Values per token: ``token``, or fewer for a short vector (see MIN_LATENT_LENGTH)."""
    return max(1, min(token, numel // (MIN_LATENT_LENGTH * 2**downsample)))


def _norm_act(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm1d(channels, affine=True), nn.LeakyReLU(0.2)]


class ParamAutoencoder(nn.Module):
    """(B, P) standardised parameter vectors ⇄ (B, latent_channels, latent_length) latents."""

    def __init__(
        self,
        numel: int,
        token: int,
        channels: list[int],
        downsample: int,
        latent_channels: int,
    ) -> None:
        super().__init__()
        if not 0 <= downsample <= len(channels):
            raise ValueError(f"downsample={downsample} needs 0..{len(channels)} layers")
        self.numel = numel
        self.fold = fold_size(numel, token, downsample)
        stride_product = 2**downsample
        tokens = math.ceil(numel / self.fold)
        self.tokens = math.ceil(tokens / stride_product) * stride_product
        self.latent_shape = (latent_channels, self.tokens // stride_product)

        # Encoder: layer i halves the length when i < downsample.
        layers: list[nn.Module] = []
        prev = self.fold
        for i, ch in enumerate(channels):
            stride = 2 if i < downsample else 1
            layers += [nn.Conv1d(prev, ch, 3, stride=stride, padding=1), *_norm_act(ch)]
            prev = ch
        self.encoder = nn.Sequential(*layers)
        self.pos_in = nn.Parameter(torch.zeros(1, self.fold, self.tokens))
        self.to_latent = nn.Conv1d(prev, latent_channels, 1)

        # Decoder: the mirror image; layers that halved the length now double it.
        self.from_latent = nn.Conv1d(latent_channels, prev, 1)
        self.pos_latent = nn.Parameter(torch.zeros(1, prev, self.latent_shape[1]))
        layers = []
        outs = [*reversed(channels[:-1]), channels[0]]
        for j, ch in enumerate(outs):
            i = len(channels) - 1 - j  # the encoder layer this one mirrors
            if i < downsample:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers += [nn.Conv1d(prev, ch, 3, padding=1), *_norm_act(ch)]
            prev = ch
        self.decoder = nn.Sequential(*layers)
        self.to_tokens = nn.Conv1d(prev, self.fold, 1)
        nn.init.normal_(self.pos_in, std=0.02)
        nn.init.normal_(self.pos_latent, std=0.02)

    def encode(self, v: torch.Tensor) -> torch.Tensor:
        """v (B, P) → z (B, latent_channels, latent_length)."""
        # 1. pad to whole tokens, fold (B, P) → (B, fold, tokens): token values as channels
        v = F.pad(v, (0, self.tokens * self.fold - self.numel))
        x = v.view(v.shape[0], self.tokens, self.fold).transpose(1, 2)
        # 2. position embedding, conv layers, 1x1 to the latent channels
        return self.to_latent(self.encoder(x + self.pos_in))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_channels, latent_length) → v' (B, P)."""
        # 1. 1x1 from the latent, position embedding, conv layers (upsampling on the way)
        h = self.decoder(self.from_latent(z) + self.pos_latent)
        # 2. back to token values, unfold, drop the padding
        x = self.to_tokens(h).transpose(1, 2).reshape(z.shape[0], -1)
        return x[:, : self.numel]

    def forward(
        self,
        v: torch.Tensor,
        input_noise: float = 0.0,
        latent_noise: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """V' = f_dec(f_enc(V + ξ_V) + ξ_Z) with ξ ~ N(0, σ²) (p-diff's training pass)."""
        if input_noise:
            v = v + input_noise * torch.randn(v.shape, generator=generator).to(v)
        z = self.encode(v)
        if latent_noise:
            z = z + latent_noise * torch.randn(z.shape, generator=generator).to(z)
        return self.decode(z)


class LatentDenoiser(nn.Module):
    """ε̂θ(z_t, t): conv in + position embedding, ResBlocks fed the timestep embedding, conv out.
    Unconditional: the diffusion core (`wgen.diffusion`) calls it as ``model(z_t, t)``."""

    def __init__(
        self, latent_shape: tuple[int, int], channels: int, blocks: int, groups: int = 8
    ) -> None:
        super().__init__()
        latent_channels, length = latent_shape
        emb_dim = 4 * channels
        self.time_emb = EmbeddingMLP(channels, emb_dim)
        self.conv_in = nn.Conv1d(latent_channels, channels, 3, padding=1)
        self.pos = nn.Parameter(torch.zeros(1, channels, length))
        self.blocks = nn.ModuleList(
            ResBlock1D(channels, channels, emb_dim, groups) for _ in range(blocks)
        )
        self.out = nn.Sequential(
            nn.GroupNorm(math.gcd(channels, groups), channels),
            Activation(),
            nn.Conv1d(channels, latent_channels, 3, padding=1),
        )
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, latent_channels, length), t (B,) → ε̂ of x's shape."""
        emb = act(self.time_emb(t))
        h = self.conv_in(x) + self.pos
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
