"""p-diff's networks on a tiny real zoo: shapes, the autoencoder learning, generated
parameters loading into the classifier, save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wgen.config import load_config
from wgen.core.runtime import torch_threads
from wgen.models.classifiers import ImageSpec, build_classifier
from wgen.models.param_autoencoder import ParamAutoencoder
from wgen.pdiff.data import load_images
from wgen.pdiff.fit import (
    FitState,
    ParamCodec,
    PdiffModel,
    autoencoder_loss,
    build_autoencoder,
    build_latent_denoiser,
    latent_ddpm_loss,
    latent_schedule,
)
from wgen.pdiff.zoo import (
    base_fingerprint,
    load_vector,
    parameters,
    selection_for,
    train_mlp,
    zoo_manifest,
)
from wgen.weights.format import flatten


@pytest.fixture(scope="module")
def tiny_zoo():
    """Four real MLP-3s of the tiny preset: (config, data, manifest, (4, P) vectors, a model)."""
    config = load_config("tiny")
    cfg = config.pdiff
    data = load_images(cfg)
    rows, model = [], None
    with torch_threads(1):
        for seed in range(4):
            model, _ = train_mlp(cfg, data, seed)
            manifest = zoo_manifest(
                model, cfg, "mlp", base_fingerprint(model, selection_for(cfg, "mlp"))
            )
            rows.append(np.concatenate(flatten(parameters(model), manifest)))
    return config, data, manifest, np.stack(rows), model


@pytest.mark.parametrize(("numel", "downsample"), [(32, 1), (682, 1), (3466, 2)])
def test_autoencoder_shapes(numel, downsample):
    ae = ParamAutoencoder(
        numel, token=16, channels=[8, 8, 8, 8], downsample=downsample, latent_channels=4
    )
    v = torch.randn(3, numel)
    z = ae.encode(v)
    assert z.shape == (3, *ae.latent_shape) and z.shape[-1] >= 8
    assert ae(v, 0.001, 0.1).shape == v.shape


def test_classifiers_are_seeded_without_the_global_rng():
    spec = ImageSpec(1, 8, 10)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_classifier("convnet", spec, 4, seed=5)
    assert torch.rand(1) == before  # the caller's RNG did not move
    b = build_classifier("convnet", spec, 4, seed=5)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert a(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_autoencoder_reconstruction_error_falls_on_a_tiny_zoo(tiny_zoo):
    config, _, manifest, vectors, _ = tiny_zoo
    cfg = config.pdiff
    codec = ParamCodec.fit(vectors, manifest)
    rows = torch.from_numpy(codec.encode(vectors))
    ae = build_autoencoder(cfg, rows.shape[1])
    optimizer = torch.optim.AdamW(ae.parameters(), lr=cfg.ae_lr * 3)
    generator = torch.Generator().manual_seed(0)
    with torch_threads(1):
        losses = []
        for _ in range(60):
            loss = autoencoder_loss(ae, rows, cfg, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    # Below 0.8x: more than learning the zoo mean (about 0.75 of the start on 4 random MLPs)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_generated_parameters_load_into_the_model_and_run(tiny_zoo, tmp_path):
    config, data, manifest, vectors, model = tiny_zoo
    cfg = config.pdiff
    codec = ParamCodec.fit(vectors, manifest)
    ae = build_autoencoder(cfg, vectors.shape[1])
    den = build_latent_denoiser(cfg, ae.latent_shape)
    # one DDPM step, so the loss function is exercised on the real latent shape
    z = ae.encode(torch.from_numpy(codec.encode(vectors))).detach()
    assert latent_ddpm_loss(
        den, latent_schedule(cfg), z, torch.Generator().manual_seed(0)
    ).isfinite()
    pdiff = PdiffModel(cfg, ae, den, codec, manifest, FitState(latent_scale=float(z.std())), {})
    samples = pdiff.sample(3, seed=1, steps=2)
    assert samples.shape == (3, vectors.shape[1])
    for vector in samples:
        logits = load_vector(model, manifest, vector)(data.x_heldout)
        assert logits.shape == (len(data.y_heldout), 10) and torch.isfinite(logits).all()
    pdiff.save(tmp_path)
    again = PdiffModel.load(tmp_path)
    np.testing.assert_array_equal(again.sample(3, seed=1, steps=2), samples)
