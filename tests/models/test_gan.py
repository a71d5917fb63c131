"""The GAN networks: shapes per size preset, identity start, determinism, fingerprints."""

from __future__ import annotations

import pytest
import torch

from wgen.config import LoRAConfig
from wgen.gan.lora import add_lora, count_parameters
from wgen.models.gan import GAN_SIZES, build_discriminator, build_generator, fingerprint

FORWARD_SIZES = ["tiny", "demo"]  # cluster (256×256) is built and counted, not run


def _images(size_name: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    side = GAN_SIZES[size_name].image_size
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, side, side, generator=generator) * 2 - 1


@pytest.mark.parametrize("size_name", FORWARD_SIZES)
def test_generator_keeps_image_shape_and_range(size_name):
    x = _images(size_name)
    y = build_generator(size_name, seed=0)(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1


@pytest.mark.parametrize("size_name", FORWARD_SIZES)
def test_discriminator_gives_patch_logits(size_name):
    size = GAN_SIZES[size_name]
    x = _images(size_name, batch=3)
    logits = build_discriminator(size_name, seed=0)(x, x)
    side = size.image_size // 2**size.disc_layers
    assert logits.shape == (3, 1, side, side)


@pytest.mark.parametrize("size_name", FORWARD_SIZES)
def test_fresh_generator_returns_its_input(size_name):
    # The colour skip starts as the identity and the head at zero (identity-friendly design).
    x = _images(size_name)
    assert torch.allclose(build_generator(size_name, seed=0)(x), x, atol=2e-3)


@pytest.mark.parametrize("build", [build_generator, build_discriminator])
def test_pix2pix_init_draws_every_weight_from_its_normal(build):
    """pix2pix's init_weights("normal", 0.02): weights N(0, 0.02), norm scales N(1, 0.02),
    biases 0; the identity-friendly default keeps PyTorch's own (wider) conv init."""
    model = build("demo", seed=0, init="pix2pix").requires_grad_(False)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.mean().abs() < 2e-3 and weights.std() == pytest.approx(0.02, rel=0.05)
    assert all(m.bias is None or not m.bias.any() for m in convs)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm | torch.nn.LayerNorm)]
    scales = torch.cat([m.weight for m in norms])
    assert scales.std() == pytest.approx(0.02, rel=0.3) and not scales.eq(1).all()
    default = torch.cat([m.weight.flatten() for m in build("demo", seed=0).requires_grad_(False).modules()
                         if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)])  # fmt: skip
    assert default.std() > 1.5 * weights.std()


def test_pix2pix_init_starts_far_from_the_identity_and_an_unknown_init_is_named():
    x = _images("tiny")
    out = build_generator("tiny", seed=0, init="pix2pix")(x)
    assert (out - x).abs().mean() > 0.1 and out.abs().mean() < x.abs().mean()  # near grey
    with pytest.raises(ValueError, match="GAN init 'xavier'; valid: identity, pix2pix"):
        build_generator("tiny", init="xavier")


def test_generator_is_trainable_away_from_identity():
    # The zero-initialised head still receives gradients, so training can leave the identity.
    generator = build_generator("tiny", seed=0)
    x = _images("tiny")
    (generator(x) + x).abs().mean().backward()
    assert generator.head.weight.grad.abs().sum() > 0


def test_generator_refuses_sides_the_skips_cannot_align():
    with pytest.raises(ValueError, match="must divide by 4"):
        build_generator("tiny")(torch.zeros(1, 3, 18, 16))


def test_same_seed_same_network_and_output():
    x = _images("tiny")
    a, b = build_generator("tiny", seed=3), build_generator("tiny", seed=3)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    assert torch.equal(a(x), b(x))


def test_seeded_build_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_generator("tiny", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_fingerprint_tracks_size_and_weights():
    base = build_generator("tiny", seed=0)
    assert fingerprint(base, "tiny") == fingerprint(build_generator("tiny", seed=0), "tiny")
    assert fingerprint(base, "tiny") != fingerprint(build_generator("tiny", seed=1), "tiny")
    assert fingerprint(base, "tiny") != fingerprint(build_generator("demo", seed=0), "demo")
    nudged = build_generator("tiny", seed=0)
    with torch.no_grad():
        nudged.res[0].conv1.weight[0, 0, 0, 0] += 1e-6
    assert fingerprint(base, "tiny") != fingerprint(nudged, "tiny")
    assert len(fingerprint(base, "tiny")) == 16


def test_unknown_size_lists_valid_ones():
    with pytest.raises(KeyError, match="valid sizes.*cluster.*demo.*tiny"):
        build_generator("huge")
    with pytest.raises(KeyError, match="valid sizes"):
        build_discriminator("huge")


@pytest.mark.parametrize("size_name", sorted(GAN_SIZES))
def test_default_lora_targets_name_real_modules(size_name):
    names = {name for name, _ in build_generator(size_name).named_modules()}
    for target in GAN_SIZES[size_name].default_lora_targets:
        assert any(n == target or n.endswith("." + target) for n in names), target


def test_parameter_counts_per_size():
    """Full generator vs LoRA (rank 4) per size; the paper's E2GAN: 7.06M → 0.22M."""
    expected_range = {"tiny": (20e3, 50e3), "demo": (150e3, 400e3), "cluster": (5e6, 9e6)}
    for size_name in ("tiny", "demo", "cluster"):
        generator = build_generator(size_name, seed=0)
        full = count_parameters(generator)["total"]
        disc = sum(p.numel() for p in build_discriminator(size_name).parameters())
        counts = count_parameters(add_lora(generator, LoRAConfig(rank=4), size_name))
        print(
            f"{size_name}: generator {full:,}  discriminator {disc:,}  "
            f"LoRA r=4 {counts['lora']:,} ({counts['lora'] / full:.1%})  norms {counts['norms']:,}"
        )
        low, high = expected_range[size_name]
        assert low <= full <= high
        assert 0 < counts["lora"] < 0.15 * full
