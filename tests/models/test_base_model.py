"""The base-model protocol and its GAN implementation: what the generator path relies on
gives what the GAN-specific code it replaced gave, and base folders of any age load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wgen.config import load_config
from wgen.core.errors import ConfigError
from wgen.gan.base_model import GanBaseModel
from wgen.gan.lora import load_adapter, trainable_state_dict
from wgen.gan.training import Evaluator, lora_generator, weight_manifest
from wgen.models.base import BASE_FILE, BaseModel, TaskData, base_family, load_base_model
from wgen.models.gan import GAN_SIZES
from wgen.weights.format import unflatten

from .test_funcspace import random_rows
from .test_weightgen import tiny_base


@pytest.fixture(scope="module")
def config():
    return load_config("tiny")


@pytest.fixture(scope="module")
def gan(config) -> GanBaseModel:
    return GanBaseModel(tiny_base(), config.lora, config.collect)


@pytest.fixture(scope="module")
def state(config, gan) -> dict[str, torch.Tensor]:
    """A LoRA with every value moved off its init (B ≠ 0): its outputs differ from the base's."""
    manifest = gan.manifest()
    return unflatten(random_rows(gan.gan, config, manifest, 1)[0], manifest)


def images(count: int, seed: int) -> np.ndarray:
    side = GAN_SIZES["tiny"].image_size
    return np.random.default_rng(seed).integers(0, 256, (count, side, side, 3), dtype=np.uint8)


def test_the_gan_satisfies_the_protocol(gan):
    assert isinstance(gan, BaseModel)
    assert gan.family == "gan" and gan.quality_key == "l1"
    assert gan.fingerprint == gan.gan.fingerprint


def test_manifest_is_the_collections_weight_layout(config, gan):
    assert gan.manifest().to_json() == weight_manifest(gan.gan, config.lora).to_json()


def test_functional_forward_equals_the_model_with_the_lora_loaded(config, gan, state):
    names = gan.parameter_names(list(state))
    x, _ = gan.tensors(images(2, 0), images(2, 1))
    with torch.no_grad():
        expected = lora_generator(gan.gan, config.lora, state).eval()(x)
        found = gan.functional_forward({names[k]: v for k, v in state.items()}, x)
        torch.testing.assert_close(found, expected)
        base_output = lora_generator(gan.gan, config.lora).eval()(x)
    assert not torch.allclose(found, base_output), "the LoRA changes the output"
    targets = expected + 0.2
    assert float(gan.function_loss(found, targets)) == pytest.approx(0.1, abs=1e-5)


def test_export_is_a_peft_adapter_that_reads_back_equal(gan, state, tmp_path):
    folder = gan.export(state, tmp_path / "adapter")
    assert (folder / "adapter_config.json").exists()
    model = load_adapter(gan.gan.build_generator(), folder, gan.fingerprint)
    read_back = trainable_state_dict(model)
    assert list(read_back) == list(state)
    for key, value in state.items():
        torch.testing.assert_close(read_back[key], value, rtol=0, atol=0)


def test_quality_is_the_paired_metrics_on_the_held_back_pairs(config, gan, state):
    task = TaskData("c0001", "invert", images(4, 2), images(4, 3), images(4, 4), images(4, 5))
    evaluator = Evaluator(task.eval_inputs, task.eval_targets, gan.extractor)
    for lora in (None, state):
        expected = evaluator(lora_generator(gan.gan, config.lora, lora))
        found = gan.quality(lora, task)
        assert set(found) == {"l1", "psnr", "fd"} and gan.quality_key in found
        assert found == pytest.approx(expected)


def test_a_base_folder_names_its_family_and_an_old_one_loads_as_the_gan(config, gan, tmp_path):
    gan.save(tmp_path / "base")
    meta = json.loads((tmp_path / "base" / BASE_FILE).read_text())
    assert meta["family"] == "gan"
    del meta["family"]  # as a base folder written before families
    (tmp_path / "base" / BASE_FILE).write_text(json.dumps(meta))
    assert base_family(tmp_path / "base") == "gan"
    loaded = load_base_model(tmp_path / "base", config)
    assert isinstance(loaded, GanBaseModel) and loaded.fingerprint == gan.fingerprint
    assert "family" not in loaded.gan.info


def test_an_unknown_family_is_a_one_line_config_error(config, gan, tmp_path):
    gan.save(tmp_path / "base")
    meta = json.loads((tmp_path / "base" / BASE_FILE).read_text())
    (tmp_path / "base" / BASE_FILE).write_text(json.dumps({**meta, "family": "diffusers"}))
    with pytest.raises(ConfigError) as err:
        load_base_model(tmp_path / "base", config)
    message = str(err.value)
    assert "\n" not in message and "'diffusers'" in message and "gan" in message
