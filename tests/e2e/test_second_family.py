"""A second base-model family end to end: a text-conditioned generator trained by `wgen train`
on the classifier-norm zoo (`wgen.normzoo`), then `wgen generate` for held-out class subsets;
the norm layers it writes load into the base classifier without wgen and classify those
subsets' held-out images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from wgen.core.runtime import SUCCESS_FILE
from wgen.generator.checkpoint import WeightGenerator
from wgen.models.base import BASE_DIR, load_base_model
from wgen.models.classifiers import ImageSpec, build_classifier
from wgen.normzoo.base_model import EXPORT_WEIGHTS, WEIGHTS_FILE
from wgen.normzoo.concepts import CONCEPTS_FILE, load_concepts
from wgen.normzoo.zoo import NormZooConfig, build_zoo

# 2.5-3.5 min on 2 busy cores (zoo ~45 s, `wgen train` ~1.5-2 min, one `wgen generate`)
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

# The default zoo: 60 training, 4 validation and 4 held-out concepts of 3 classes, K = 3,
# 80 norm values each.
ZOO = NormZooConfig()
# The tiny preset's generator for 40 epochs, 32 images per concept in the function-space
# term. Paraphrases come from the GAN's edit grammar, which has no words for digits.
SETS = ["train.paraphrases=0", "train.epochs=40", "train.func_pairs=32"]


def wgen(ray_local, *args: str) -> str:
    """``python -m wgen *args`` on the shared Ray, as a user runs it; returns its output."""
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    done = subprocess.run(
        [sys.executable, "-m", "wgen", *args], env=env, capture_output=True, text=True, timeout=600
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


def classifier_with(base_folder, norms_file) -> torch.nn.Module:
    """The base classifier with the generated norms, as a user loads them without wgen."""
    meta = json.loads((base_folder / "base.json").read_text())
    model = build_classifier("convnet", ImageSpec(**meta["image"]), meta["width"], seed=0)
    model.load_state_dict(load_file(str(base_folder / WEIGHTS_FILE)))
    norms = load_file(str(norms_file))
    assert not model.load_state_dict(norms, strict=False).unexpected_keys
    assert sorted(norms) == [f"norm{i}.{p}" for i in (1, 2, 3) for p in ("bias", "weight")]
    return model.eval()


def test_generated_norm_layers_load_into_the_classifier_and_classify_heldout_subsets(
    ray_local, tmp_path
):
    start = time.perf_counter()
    build_zoo(tmp_path, ZOO)
    zoo_s = time.perf_counter() - start

    sets = [arg for item in SETS for arg in ("--set", item)]
    wgen(ray_local, "train", "--preset", "tiny", *sets, "--out", str(tmp_path))
    train_s = time.perf_counter() - start - zoo_s
    assert (tmp_path / "generator" / SUCCESS_FILE).exists()
    generator = WeightGenerator.load(tmp_path / "generator")
    metrics = generator.info["metrics"]  # the quality probe on the validation concepts
    print(
        f"zoo {zoo_s:.0f} s, train {train_s:.0f} s; validation probe: error "
        f"{metrics['quality_error']:.3f} (another concept's text "
        f"{metrics['quality_error_shuffled']:.3f}, null text {metrics['quality_error_null']:.3f})"
    )
    assert metrics["quality_error"] < metrics["quality_error_shuffled"]  # it reads its text

    # What the generator makes of a held-out text (never collected, never trained on) and of
    # another held-out concept's text, against the base's own norms, on the concept's images.
    base = load_base_model(tmp_path / BASE_DIR, None)
    heldout = [c for c in load_concepts(tmp_path / CONCEPTS_FILE) if c.split == "heldout"]
    assert len(heldout) == ZOO.heldout_concepts
    scores = []
    for i, concept in enumerate(heldout):
        (task,) = base.task_data(tmp_path, [concept.id])
        state, _ = generator.generate(concept.text)
        other, _ = generator.generate(heldout[(i + 1) % len(heldout)].text)
        x, y = base.tensors(task.eval_inputs, task.eval_targets)
        with torch.no_grad():
            logits = base.functional_forward(state, x)
        assert torch.isfinite(logits).all()
        scores.append(
            {
                "generated": (logits.argmax(1) == y).float().mean().item(),
                "other text": base.quality(other, task)["accuracy"],
                "base": base.quality(None, task)["accuracy"],
            }
        )
        print(
            f"{concept.id} {concept.text!r} ({len(y)} held-out images): accuracy "
            + ", ".join(f"{k} {v:.3f}" for k, v in scores[-1].items())
            + f", chance {1 / len(concept.classes):.3f}"
        )
        assert scores[-1]["generated"] > 1 / len(concept.classes), concept.text
    mean = {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}
    print("mean over held-out concepts: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))
    # the concept's own norms, generated from its text alone, classify better than the base's
    assert mean["generated"] > mean["base"], mean

    # `wgen generate` writes the same norms, and a user loads them without wgen.
    concept = heldout[0]
    folder = tmp_path / "norms" / concept.id
    args = ["--generator", str(tmp_path / "generator"), "--concept", concept.text]
    wgen(ray_local, "generate", *args, "--out", str(folder))
    model = classifier_with(tmp_path / BASE_DIR, folder / EXPORT_WEIGHTS)
    state, _ = generator.generate(concept.text)
    (task,) = base.task_data(tmp_path, [concept.id])
    x, _ = base.tensors(task.eval_inputs, task.eval_targets)
    with torch.no_grad():
        assert torch.allclose(model(x), base.functional_forward(state, x), atol=1e-5)
