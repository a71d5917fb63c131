"""The 1D UNet denoiser: shapes, determinism, conditioning, null text, save/load."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from wgen.config import DenoiserConfig
from wgen.models.denoiser import DENOISER_SIZES, Denoiser, build_denoiser, sin_enc

TEXT_DIM = 24


def tiny(
    block_size: int = 32, seed: int = 0, extra_cond: bool = False, text_in_emb: bool = False
) -> Denoiser:
    """A tiny denoiser as if trained: its zero-initialised output layer is given random
    weights, so every input can show in the output."""
    torch.manual_seed(seed)
    cfg = DenoiserConfig(size="tiny", block_size=block_size, index_dim=16, text_in_emb=text_in_emb)
    model = build_denoiser(cfg, TEXT_DIM, extra_cond=extra_cond).eval()
    with torch.no_grad():
        model.conv_out.weight.normal_(std=0.3)
        model.conv_out.bias.normal_(std=0.3)
    return model


def test_an_untrained_denoiser_outputs_zero_the_centre_of_the_weights() -> None:
    # x0 prediction then starts at the mean training checkpoint (ADM's zero-initialised output)
    torch.manual_seed(0)
    model = build_denoiser(DenoiserConfig(size="tiny", index_dim=16), TEXT_DIM)
    x, t, n, text = inputs(3, 32)
    assert torch.count_nonzero(model(x, t, n, text)) == 0


def inputs(batch: int, block_size: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, block_size, generator=g)
    t = torch.randint(0, 100, (batch,), generator=g)
    n = torch.arange(batch)
    text = token_states(batch, g)
    return x, t, n, text


def token_states(batch: int, g: torch.Generator, tokens: int = 5) -> torch.Tensor:
    """(batch, tokens, TEXT_DIM) token states; odd rows are 2 tokens shorter (zero padding)."""
    text = torch.randn(batch, tokens, TEXT_DIM, generator=g)
    text[1::2, -2:] = 0.0
    return text


def test_sin_enc_matches_the_formula() -> None:
    d = 7
    n = torch.tensor([0.0, 1.0, 5.0, 123.0])
    enc = sin_enc(n, d)
    assert enc.shape == (4, d)
    for row, value in enumerate(n.tolist()):
        for i in range((d - 1) // 2 + 1):
            angle = value / 10000 ** (2 * i / d)
            assert enc[row, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            if 2 * i + 1 < d:
                assert enc[row, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.parametrize("block_size", [1, 5, 16, 33, 64, 100])
def test_output_shape_matches_input_for_any_b(block_size: int) -> None:
    model = tiny(block_size)
    x, t, n, text = inputs(6, block_size)
    out = model(x, t, n, text)
    assert out.shape == (6, 1, block_size) and torch.isfinite(out).all()


def test_all_sizes_build_and_run() -> None:
    for size in DENOISER_SIZES:
        model = build_denoiser(DenoiserConfig(size=size, index_dim=16), TEXT_DIM).eval()
        x, t, n, text = inputs(2, 64)
        with torch.no_grad():
            assert model(x, t, n, text).shape == (2, 1, 64)


def test_unknown_size_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="tiny"):
        build_denoiser(DenoiserConfig(size="huge"), TEXT_DIM)


def test_fixed_seed_gives_identical_models_and_outputs() -> None:
    x, t, n, text = inputs(4, 32)
    a, b = tiny(seed=3), tiny(seed=3)
    torch.testing.assert_close(a(x, t, n, text), b(x, t, n, text), rtol=0, atol=0)
    assert not torch.allclose(tiny(seed=4)(x, t, n, text), a(x, t, n, text))


@pytest.mark.parametrize("text_in_emb", [False, True])
def test_block_index_timestep_and_text_change_the_output(text_in_emb: bool) -> None:
    model = tiny(text_in_emb=text_in_emb)
    x, t, n, text = inputs(4, 32)
    base = model(x, t, n, text)
    assert not torch.allclose(model(x, t, n + 7, text), base, atol=1e-5)
    assert not torch.allclose(model(x, (t + 30) % 100, n, text), base, atol=1e-5)
    assert not torch.allclose(model(x, t, n, text.flip(0)), base, atol=1e-5)


def test_shared_text_of_batch_one_equals_repeated_text() -> None:
    model = tiny()
    x, t, n, text = inputs(5, 32)
    shared = model(x, t, n, text[:1])
    repeated = model(x, t, n, text[:1].expand(5, -1, -1))
    torch.testing.assert_close(shared, repeated)


def test_drop_text_uses_the_null_embedding() -> None:
    model = tiny()
    with torch.no_grad():
        model.null_text.normal_()
    x, t, n, text = inputs(4, 32)
    drop = torch.tensor([True, False, True, False])
    out = model(x, t, n, text, drop_text=drop)
    # A text of zeros is the null condition too (the samplers' unconditional pass).
    expected_null = model(x, t, n, torch.zeros_like(text))
    torch.testing.assert_close(out[drop], expected_null[drop])
    torch.testing.assert_close(out[~drop], model(x, t, n, text)[~drop])
    # Dropped rows ignore whatever text was given.
    torch.testing.assert_close(model(x, t, n, -text, drop_text=drop)[drop], out[drop])


def test_extra_condition_starts_neutral_then_matters() -> None:
    teacher = tiny(seed=5)
    student = tiny(seed=6, extra_cond=True)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("extra_mlp.") for key in missing)
    x, t, n, text = inputs(4, 32)
    w = torch.full((4,), 2.0)
    # Zero-initialised output layer: the student first reproduces the teacher for any w.
    torch.testing.assert_close(student(x, t, n, text, extra_cond=w), teacher(x, t, n, text))
    with torch.no_grad():
        student.extra_mlp.net[-1].weight.normal_()
    assert not torch.allclose(
        student(x, t, n, text, extra_cond=w), student(x, t, n, text, extra_cond=w * 0)
    )
    with pytest.raises(ValueError, match="extra_cond"):
        teacher(x, t, n, text, extra_cond=w)


def test_state_dict_save_load_round_trip(tmp_path) -> None:
    model = tiny(seed=8)
    path = tmp_path / "denoiser.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = tiny(seed=9)
    loaded.load_state_dict(load_file(str(path)))
    x, t, n, text = inputs(3, 32)
    torch.testing.assert_close(loaded(x, t, n, text), model(x, t, n, text), rtol=0, atol=0)


def test_padding_tokens_are_masked_out() -> None:
    model = tiny()
    x, t, n, text = inputs(2, 32)
    longer = torch.cat((text, torch.zeros(2, 3, TEXT_DIM)), dim=1)  # more padding
    torch.testing.assert_close(model(x, t, n, longer), model(x, t, n, text))
    changed = text.clone()
    changed[0, 1] += 1.0  # a real token of row 0
    out = model(x, t, n, changed)
    assert not torch.allclose(out[0], model(x, t, n, text)[0], atol=1e-5)


def test_pooled_view_takes_one_vector_per_text() -> None:
    torch.manual_seed(0)
    cfg = DenoiserConfig(size="tiny", block_size=32, index_dim=16, text="pooled")
    model = build_denoiser(cfg, TEXT_DIM).eval()
    torch.nn.init.normal_(model.conv_out.weight)  # as if trained (it starts at zero)
    x, t, n, _ = inputs(3, 32)
    pooled = torch.randn(3, TEXT_DIM)
    out = model(x, t, n, pooled)
    assert out.shape == (3, 1, 32)
    assert not torch.allclose(model(x, t, n, pooled.flip(0)), out, atol=1e-5)
    with pytest.raises(ValueError, match="pooled"):
        model(x, t, n, pooled[:, None, :])


def test_text_rows_equal_repeated_texts() -> None:
    model = tiny()
    x, t, n, text = inputs(6, 32)
    rows = torch.tensor([0, 0, 1, 1, 1, 0])
    torch.testing.assert_close(model(x, t, n, text[:2], text_rows=rows), model(x, t, n, text[rows]))


def test_pooled_text_in_the_embedding_reads_only_the_real_tokens() -> None:
    # the masked mean ignores padding: extra zero rows leave the output unchanged
    model = tiny(text_in_emb=True)
    x, t, n, text = inputs(2, 32)
    longer = torch.cat((text, torch.zeros(2, 3, TEXT_DIM)), dim=1)
    torch.testing.assert_close(model(x, t, n, longer), model(x, t, n, text))
    with torch.no_grad():
        off = tiny(text_in_emb=False)
        off.load_state_dict(
            {k: v for k, v in model.state_dict().items() if not k.startswith("text_mlp.")}
        )
    assert not torch.allclose(off(x, t, n, text), model(x, t, n, text), atol=1e-5)


def test_the_block_readout_starts_at_zero_and_writes_each_block_from_the_text() -> None:
    torch.manual_seed(0)
    cfg = DenoiserConfig(size="tiny", block_size=32, index_dim=16, block_readout=4)
    with pytest.raises(ValueError, match="n_blocks"):
        build_denoiser(cfg, TEXT_DIM)
    model = build_denoiser(cfg, TEXT_DIM, n_blocks=3).eval()
    x, t, n, text = inputs(3, 32)
    assert torch.count_nonzero(model(x, t, n, text)) == 0  # still the centre at init
    with torch.no_grad():
        model.readout.weight.normal_()
    out = model(x, t, n, text)
    # Block 0 with another text, and the same text for blocks 0 and 1, differ.
    other = model(x[:1], t[:1], n[:1], text[1:2])
    assert not torch.allclose(out[:1], other)
    shared = model(x[:2], t[:2], n[:2], text[:1])
    assert not torch.allclose(shared[0], shared[1])
    # Padding does not change the pooled text; the null text (all zeros) is the null tokens'.
    padded = torch.cat((text[:1], torch.zeros(1, 2, TEXT_DIM)), dim=1)
    torch.testing.assert_close(model(x[:1], t[:1], n[:1], padded), out[:1])
    null = model.readout_text(torch.zeros(1, 5, TEXT_DIM), None, None)
    torch.testing.assert_close(null, model.null_text.mean(0, keepdim=True))
    # The readout learns: its U gets a gradient through the output.
    out.sum().backward()
    assert model.readout.weight.grad is not None and model.readout.weight.grad.abs().sum() > 0
