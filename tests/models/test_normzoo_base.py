"""The classifier-norm base model: the protocol, its functional forward, export, quality, and
its base folder (a tiny zoo built without Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from wgen.core.errors import InputFileError
from wgen.models.base import BASE_DIR, BASE_MODELS, BaseModel, base_family, load_base_model
from wgen.models.classifiers import ImageSpec, build_classifier
from wgen.normzoo.base_model import (
    EXPORT_META,
    EXPORT_WEIGHTS,
    WEIGHTS_FILE,
    NormClassifierBaseModel,
)
from wgen.normzoo.concepts import load_concepts
from wgen.normzoo.zoo import (
    NormZooConfig,
    collect_concept,
    concepts_of,
    ensure_base,
    finetune,
    write_concept_table,
)
from wgen.weights.format import WeightFormatError, unflatten
from wgen.weights.store import WeightStore, group_column

# the default base (width 8) and fine-tuning, fewer concepts
CFG = NormZooConfig(train_concepts=4, val_concepts=1, heldout_concepts=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder with the base and two collected concepts, in this process."""
    out = tmp_path_factory.mktemp("normzoo")
    concepts = concepts_of(CFG)
    write_concept_table(out, concepts)
    base = ensure_base(out, CFG)
    WeightStore(out).save_manifest(base.manifest())
    for index, concept in enumerate(concepts[:2]):
        collect_concept(out, CFG, concept, index)
    return out


@pytest.fixture(scope="module")
def base(run) -> NormClassifierBaseModel:
    return load_base_model(run / BASE_DIR, config=None)


@pytest.fixture(scope="module")
def task(run, base):
    (task,) = base.task_data(run, ["c0000"])
    return task


def fresh_classifier(base_folder: Path) -> torch.nn.Module:
    """The base classifier as a user rebuilds it, without wgen's base-model class."""
    meta = json.loads((base_folder / "base.json").read_text())
    model = build_classifier("convnet", ImageSpec(**meta["image"]), meta["width"], seed=123)
    model.load_state_dict(load_file(str(base_folder / WEIGHTS_FILE)))
    return model.eval()


def test_the_base_satisfies_the_protocol_and_its_folder_names_the_family(run, base):
    assert isinstance(base, BaseModel)
    assert base_family(run / BASE_DIR) == "classifier-norm" and "classifier-norm" in BASE_MODELS
    manifest = base.manifest()
    assert manifest.keys == [f"norm{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")]
    assert manifest.group_lengths == [2 * 8, 2 * 16, 2 * 16]  # width 8: 8, 16, 16 channels
    assert manifest.fingerprint == base.fingerprint
    assert base.parameter_names(manifest.keys) == {k: k for k in manifest.keys}
    with pytest.raises(WeightFormatError):
        base.parameter_names(["conv1.weight"])


def test_functional_forward_with_the_base_norms_is_the_base_forward(base, task):
    x, _ = base.tensors(task.eval_inputs, task.eval_targets)
    assert torch.equal(base.functional_forward(base.state(), x), base.model(x))


def test_functional_forward_differentiates_in_the_norms_only(base, task):
    params = {k: v.clone().requires_grad_(True) for k, v in base.state().items()}
    x, y = base.tensors(task.train_inputs[:16], task.train_targets[:16])
    base.function_loss(base.functional_forward(params, x), y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())
    assert all(p.grad is None for p in base.model.parameters())
    assert not base.model.training  # BatchNorm stays on its frozen running statistics


def test_the_function_loss_bounds_the_error(base):
    logits = torch.randn(256, 10, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.randint(10, (256,), generator=torch.Generator().manual_seed(1))
    error = (logits.argmax(1) != labels).float().mean()
    assert base.function_loss(logits, labels) >= error


def test_a_task_is_its_classes_images_deterministically(run, base, task):
    classes = set(load_concepts(run / "concepts.jsonl")[0].classes)
    assert set(np.unique(task.train_targets)) == set(np.unique(task.eval_targets)) == classes
    assert task.text.startswith("digits ")
    (again,) = base.task_data(run, ["c0000"])
    assert np.array_equal(again.eval_inputs, task.eval_inputs)
    with pytest.raises(InputFileError, match="c9999"):
        base.task_data(run, ["c9999"])


def test_quality_counts_the_argmax_on_the_held_back_images(base, task):
    metrics = base.quality(None, task)
    x, y = base.tensors(task.eval_inputs, task.eval_targets)
    expected = (base.model(x).argmax(1) == y).float().mean().item()
    assert metrics["accuracy"] == pytest.approx(expected)
    assert metrics["error"] == pytest.approx(1 - expected)
    tuned = finetune(base, CFG, task, seed=0)
    assert len(tuned) == CFG.k_checkpoints
    assert tuned[-1]["metrics"]["error"] < metrics["error"]  # the subset's norms help it


def test_tensors_take_uint8_images_and_int_labels(base):
    x, y = base.tensors(np.full((2, 8, 8), 255, np.uint8), np.array([1, 2], np.int32))
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.float32 and float(x.max()) == 1.0
    assert y.dtype == torch.int64


def test_an_export_loads_into_a_fresh_classifier_without_wgen(run, base, task, tmp_path):
    state = finetune(base, CFG, task, seed=1)[-1]["state"]
    folder = base.export(state, tmp_path / "export")
    meta = json.loads((folder / EXPORT_META).read_text())
    assert meta["family"] == "classifier-norm" and meta["fingerprint"] == base.fingerprint
    model = fresh_classifier(run / BASE_DIR)
    result = model.load_state_dict(load_file(str(folder / EXPORT_WEIGHTS)), strict=False)
    assert not result.unexpected_keys
    x, _ = base.tensors(task.eval_inputs, task.eval_targets)
    with torch.no_grad():
        assert torch.equal(model(x), base.functional_forward(state, x))
    with pytest.raises(WeightFormatError, match="norm3.bias"):
        base.export({k: v for k, v in state.items() if k != "norm3.bias"}, tmp_path / "bad")


def test_the_base_folder_round_trips_and_refuses_changed_weights(run, base, tmp_path):
    folder = tmp_path / "base"
    base.save(folder)
    again = NormClassifierBaseModel.load(folder)
    assert again.fingerprint == base.fingerprint and again.info == base.info
    state = load_file(str(folder / WEIGHTS_FILE))
    state["conv1.weight"] = state["conv1.weight"] + 0.01
    save_file(state, str(folder / WEIGHTS_FILE))
    with pytest.raises(InputFileError, match="damaged"):
        NormClassifierBaseModel.load(folder)


def test_the_zoo_rows_unflatten_back_into_the_classifier(run, base):
    store = WeightStore(run)
    frame = store.read()
    assert sorted(frame["concept_id"].unique()) == ["c0000", "c0001"]
    assert len(frame) == 2 * CFG.k_checkpoints
    manifest = store.manifest()
    tasks = {t.concept_id: t for t in base.task_data(run, ["c0000", "c0001"])}
    model = fresh_classifier(run / BASE_DIR)
    for _, row in frame.iterrows():
        vectors = [np.asarray(row[group_column(g)]) for g in range(len(manifest.groups))]
        model.load_state_dict(unflatten(vectors, manifest), strict=False)
        task = tasks[row["concept_id"]]
        x, y = base.tensors(task.eval_inputs, task.eval_targets)
        with torch.no_grad():
            accuracy = (model(x).argmax(1) == y).float().mean().item()
        assert accuracy == pytest.approx(row["accuracy"]) and row["error"] == 1 - row["accuracy"]
