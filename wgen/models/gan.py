"""The image-to-image GAN whose LoRA weights wgen learns to generate.

An E2GAN-like generator (conv stem, stride-2 down-sampling, ResNet blocks, one Transformer
block at the bottleneck, up-sampling) and a conditional PatchGAN discriminator, as in
"Efficient Training with Denoised Neural Weights" (Gong et al., 2024), which fine-tunes
E2GAN with LoRA. Building blocks first, then the two models, then the named size presets
(`GAN_SIZES`), which the command line accepts by key.

Choices that matter for LoRA (peft) and for the weight dataset:

- Up-sampling is ``nn.Upsample`` + ``nn.Conv2d``: peft has no LoRA for ``ConvTranspose2d``.
- The Transformer block uses plain ``nn.Linear`` layers (not ``nn.MultiheadAttention``) so
  peft adapts q/k/v, the output projection and the MLP like any linear layer.
- Normalisation is ``GroupNorm``/``LayerNorm`` with affine parameters, so a concept's
  weights can include trained norm scales and shifts. GroupNorm (not InstanceNorm) keeps
  each image's colour statistics, which colour edits need.
- The generator is identity-friendly: its output is
  ``tanh(skip(atanh(x)) + head(features))`` with ``skip`` a 1×1 colour conv initialised to
  the identity and ``head`` initialised to zero, so a fresh generator returns its input,
  and a per-pixel colour edit is (close to) a 3×3 matrix in ``skip`` that a rank-3 LoRA
  holds: inversion exactly (atanh is odd), sepia and tints nearly. Additive U-Net skips
  carry full-resolution detail past the bottleneck for spatial edits (blur, edges).
  A zero head passes no gradient to the backbone, so a LoRA trained on a *fresh*
  generator can only learn through ``head`` and ``skip``; a trained base has no such gap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wgen.core.runtime import torch_seed

# atanh(±(1 - 1e-3)) = ±3.8: the identity path is exact to 1e-3 and its logits stay finite.
_LOGIT_EPS = 1e-3


# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with at most ``groups`` groups that divide ``channels`` (affine on)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels, affine=True)


class ConvNormAct(nn.Module):
    """Conv → GroupNorm → SiLU; the unit of the stem, the down- and the up-sampling path.

    The conv is always the attribute ``conv`` so LoRA targets read ``down.0.conv``.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2)
        self.norm = group_norm(c_out, groups)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class UpBlock(ConvNormAct):
    """A 3×3 ConvNormAct, then bilinear ×2 up-sampling: a LoRA-able stand-in for
    ConvTranspose2d (which peft cannot adapt).

    The conv runs *before* the up-sampling, at the lower resolution: four times cheaper
    than up-sample-then-conv, which matters on CPU, and bilinear up-sampling leaves no
    checkerboard or block artefacts for the next layer to undo.
    """

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__(c_in, c_out, 3, 1, groups)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(super().forward(x))


class ResBlock(nn.Module):
    """Two 3×3 convs with GroupNorm and a residual connection (the ResNet generator's block)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = group_norm(channels, groups)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = group_norm(channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        return x + self.norm2(self.conv2(h))


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens, with ``qkv`` and ``proj`` as plain linears for peft."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} does not divide into {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        # [B, T, 3·D] → 3 × [B, heads, T, D/heads]
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).unbind(2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class MLP(nn.Module):
    """The Transformer block's feed-forward part: ``fc1`` → GELU → ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block on a feature map: every spatial position is one token.

    No positional embedding: the zero-padded convs before it already encode position, and
    leaving it out keeps the block independent of the image size.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B, H·W, C]
        tokens = tokens + self.attn(self.ln1(tokens))
        tokens = tokens + self.mlp(self.ln2(tokens))
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GANSize:
    """One named size of the generator and discriminator (a preset, see `GAN_SIZES`)."""

    image_size: int  # side of the square images this size is meant for, pixels
    channels: int  # width of the stem; level i has channels·min(2^i, max_mult) channels
    n_down: int  # stride-2 down-sampling convs (the bottleneck is image_size / 2^n_down)
    max_mult: int  # cap on the width multiplier, so deep levels do not explode in size
    n_res: int  # ResNet blocks at the bottleneck, before the Transformer block
    heads: int  # attention heads of the Transformer block
    mlp_ratio: int  # hidden width of the Transformer MLP, as a multiple of the bottleneck width
    norm_groups: int  # most GroupNorm groups (fewer where the width does not divide)
    stem_kernel: int  # kernel of the full-resolution stem conv (7 in pix2pix / E2GAN)
    disc_channels: int  # width of the discriminator's first layer
    disc_layers: int  # stride-2 conv layers of the PatchGAN (patch logits at image_size / 2^n)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels at every resolution level, full resolution first."""
        return tuple(self.channels * min(2**i, self.max_mult) for i in range(self.n_down + 1))

    @property
    def default_lora_targets(self) -> list[str]:
        """peft ``target_modules`` (name suffixes): E2GAN's places (the down/up-sampling convs
        and the Transformer block's linears) plus the two full-resolution output layers.

        The output conv ``head`` and the colour ``skip`` are the only layers that see every
        pixel at the end; adapting them lets a LoRA make colour edits (in ``skip``) and spatial
        edits (blur, edges) at full resolution. Measured on a fresh (identity) demo
        generator, 200 LoRA steps at lr 5e-3: blur 29.7 → 34.4 dB and edges 12.4 → 19.9 dB
        PSNR with ``head`` adapted (whole-network training: 37.9 and 21.2 dB), for ~300
        more LoRA parameters.
        """
        down = [f"down.{i}.conv" for i in range(self.n_down)]
        up = [f"up.{i}.conv" for i in range(self.n_down)]
        return [*down, *up, "head", "skip", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]


class Generator(nn.Module):
    """E2GAN-like image-to-image generator: [B, 3, H, W] in [-1, 1] → [B, 3, H, W] in [-1, 1]."""

    def __init__(self, size: GANSize) -> None:
        super().__init__()
        widths, groups = size.widths, size.norm_groups
        self.factor = 2**size.n_down  # image sides must divide by it (the U-Net skips align)
        self.stem = ConvNormAct(3, widths[0], size.stem_kernel, 1, groups)
        self.down = nn.ModuleList(
            ConvNormAct(widths[i], widths[i + 1], 3, 2, groups) for i in range(size.n_down)
        )
        self.res = nn.Sequential(*(ResBlock(widths[-1], groups) for _ in range(size.n_res)))
        self.transformer = TransformerBlock(widths[-1], size.heads, size.mlp_ratio)
        self.up = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], groups) for i in reversed(range(size.n_down))
        )
        self.head = nn.Conv2d(widths[0], 3, 3, padding=1)
        self.skip = nn.Conv2d(3, 3, 1)
        self._init_identity()

    def _init_identity(self) -> None:
        """Start as the identity map: the colour skip passes the input, the head adds nothing."""
        with torch.no_grad():
            self.skip.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.skip.bias.zero_()
            self.head.weight.zero_()
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"image sides {tuple(x.shape[-2:])} must divide by {self.factor}")
        # 1. Encode: full-resolution stem, then stride-2 convs; keep each level for the skips.
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        # 2. Bottleneck: ResNet blocks, then one Transformer block over the spatial tokens.
        h = self.transformer(self.res(skips.pop()))
        # 3. Decode: up-sample and add the encoder features of the same resolution.
        for up in self.up:
            h = up(h) + skips.pop()
        # 4. Output in logit space, relative to the input's logits (identity-friendly).
        logits = torch.atanh(x.clamp(-1 + _LOGIT_EPS, 1 - _LOGIT_EPS))
        return torch.tanh(self.skip(logits) + self.head(h))


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN (pix2pix): logits, one per patch, for a (source, image) pair.

    The input is the 6-channel concatenation of the source and the real or generated image,
    so the discriminator judges the edit, not only the image.
    """

    def __init__(self, size: GANSize) -> None:
        super().__init__()
        width = size.disc_channels
        layers: list[nn.Module] = [nn.Conv2d(6, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(size.disc_layers - 1):
            layers += [
                nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
                group_norm(2 * width, size.norm_groups),
                nn.LeakyReLU(0.2),
            ]
            width *= 2
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([source, image], dim=1))


# ---------------------------------------------------------------------------------------
# Size presets
# ---------------------------------------------------------------------------------------

GAN_SIZES: dict[str, GANSize] = {
    # tests: ~39K generator parameters, 16×16 images, a step in milliseconds
    "tiny": GANSize(
        image_size=16, channels=8, n_down=2, max_mult=4, n_res=1, heads=2, mlp_ratio=2,
        norm_groups=4, stem_kernel=3, disc_channels=8, disc_layers=2,
    ),
    # the demo on 2 CPU cores: 32×32 images, ~0.23M generator parameters. Narrow at full
    # resolution (8 channels) and deep to a 4×4 bottleneck: a pix2pix step at batch 16
    # costs ~55-70 ms on one thread, most of it per-op overhead and full-resolution layers.
    "demo": GANSize(
        image_size=32, channels=8, n_down=3, max_mult=8, n_res=2, heads=4, mlp_ratio=2,
        norm_groups=4, stem_kernel=3, disc_channels=16, disc_layers=2,
    ),
    # a GPU cluster: 256×256 images, paper-like ~7M generator parameters (E2GAN: 7.06M)
    "cluster": GANSize(
        image_size=256, channels=64, n_down=3, max_mult=4, n_res=4, heads=8, mlp_ratio=4,
        norm_groups=32, stem_kernel=7, disc_channels=64, disc_layers=3,
    ),
}  # fmt: skip


def gan_size(size_name: str) -> GANSize:
    """The preset called ``size_name``; an unknown name is an error that lists the valid ones."""
    if size_name not in GAN_SIZES:
        raise KeyError(f"unknown GAN size {size_name!r}; valid sizes: {sorted(GAN_SIZES)}")
    return GAN_SIZES[size_name]


def _seeded(build, seed: int | None):
    """Run ``build()`` under ``seed`` without disturbing the caller's global RNG."""
    if seed is None:
        return build()
    with torch_seed(seed):
        return build()


# How a fresh network starts: "identity" (PyTorch's default init; the generator returns its
# input, see the module docstring) or "pix2pix" (pix2pix's own `init_weights`: every conv and
# linear weight from N(0, 0.02), norm scales from N(1, 0.02), biases 0; the generator's output
# starts near grey). The paper's scratch baseline is pix2pix's.
GAN_INITS = ("identity", "pix2pix")
PIX2PIX_INIT_STD = 0.02


def pix2pix_init_(model: nn.Module) -> nn.Module:
    """Re-initialise ``model`` in place as pix2pix's ``init_weights(init_type="normal")``."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.normal_(module.weight, 0.0, PIX2PIX_INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm | nn.LayerNorm) and module.weight is not None:
                nn.init.normal_(module.weight, 1.0, PIX2PIX_INIT_STD)
                nn.init.zeros_(module.bias)
    return model


def _initialised(model: nn.Module, init: str) -> nn.Module:
    if init not in GAN_INITS:
        raise ValueError(f"GAN init {init!r}; valid: {', '.join(GAN_INITS)}")
    return pix2pix_init_(model) if init == "pix2pix" else model


def build_generator(size_name: str, seed: int | None = None, init: str = "identity") -> Generator:
    """A freshly initialised generator of preset ``size_name`` (seeded if ``seed`` is given;
    ``init`` one of `GAN_INITS`)."""
    size = gan_size(size_name)
    return _seeded(lambda: _initialised(Generator(size), init), seed)


def build_discriminator(
    size_name: str, seed: int | None = None, init: str = "identity"
) -> PatchDiscriminator:
    """A freshly initialised PatchGAN of preset ``size_name`` (seeded if ``seed`` is given;
    "identity" is PyTorch's default init, as for the generator)."""
    size = gan_size(size_name)
    return _seeded(lambda: _initialised(PatchDiscriminator(size), init), seed)


def fingerprint(model: nn.Module, size_name: str) -> str:
    """A short sha256 hex of a base generator: its size preset, parameter names and shapes,
    and the bytes of every tensor in its state dict.

    An adapter records the fingerprint of the base it was trained on; loading it onto any
    other base (another size, another training run, other weights) is then refused instead
    of silently producing garbage. Call it on the base model, before LoRA is injected.
    """
    digest = hashlib.sha256()
    state = model.state_dict()
    architecture = {
        "size_name": size_name,
        "size": dataclasses.asdict(gan_size(size_name)),
        "tensors": [[name, list(t.shape), str(t.dtype)] for name, t in state.items()],
    }
    digest.update(json.dumps(architecture, sort_keys=True).encode())
    for tensor in state.values():
        # Bytes of a contiguous CPU copy: the same weights hash the same on any device.
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:16]
