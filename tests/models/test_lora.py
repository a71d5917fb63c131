"""LoRA on the generator: standard init, what trains, state dicts, adapter folders."""

from __future__ import annotations

import json
import logging
import warnings

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from wgen.config import LoRAConfig
from wgen.gan.lora import (
    CONFIG_FILE,
    METADATA_FILE,
    NORMS_FILE,
    PEFT_PREFIX,
    WEIGHTS_FILE,
    add_lora,
    count_parameters,
    load_adapter,
    load_trainable_state_dict,
    norm_parameter_names,
    read_adapter_metadata,
    save_adapter,
    trainable_state_dict,
)
from wgen.gan.losses import generator_loss
from wgen.models.gan import GAN_SIZES, build_discriminator, build_generator, fingerprint

SIZE = "tiny"


def _images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    side = GAN_SIZES[SIZE].image_size
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _lora_model(seed: int = 0, **cfg) -> torch.nn.Module:
    return add_lora(build_generator(SIZE, seed=seed), LoRAConfig(**cfg), SIZE)


@torch.no_grad()
def _randomise_trainable(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every trainable tensor non-trivial values (LoRA B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        if param.requires_grad:
            param.add_(0.1 * torch.randn(param.shape, generator=g))


def test_standard_init_leaves_output_unchanged():
    x = _images()
    base = build_generator(SIZE, seed=0)
    expected = base(x)
    assert torch.equal(add_lora(base, LoRAConfig(), SIZE)(x), expected)  # B = 0


def test_every_concept_starts_from_the_same_lora_a_without_touching_the_global_rng():
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = trainable_state_dict(_lora_model(seed=0))
    assert torch.equal(torch.rand(3), expected_draw)  # global RNG untouched
    torch.manual_seed(999)  # another concept's training seed
    second = trainable_state_dict(_lora_model(seed=0))
    other_seed = trainable_state_dict(_lora_model(seed=0, init_seed=1))
    a_keys = [k for k in first if ".lora_A" in k]
    assert a_keys
    for key in a_keys:
        assert torch.equal(first[key], second[key]), key
        assert not torch.equal(first[key], other_seed[key]), key


@pytest.mark.parametrize("train_a", [True, False])
@pytest.mark.parametrize("train_norms", [True, False])
def test_only_lora_and_norms_are_trainable(train_norms, train_a):
    model = _lora_model(train_norms=train_norms, train_a=train_a)
    norms = set(norm_parameter_names(model))
    for name, param in model.named_parameters():
        lora = ".lora_B" in name or (train_a and ".lora_A" in name)
        should_train = lora or (train_norms and name in norms)
        assert param.requires_grad == should_train, name
    counts = count_parameters(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["optimised"] == trainable
    frozen_a = sum(p.numel() for n, p in model.named_parameters() if ".lora_A" in n)
    assert counts["lora"] + counts["norms"] == trainable + (0 if train_a else frozen_a)
    assert (counts["norms"] > 0) == train_norms


def test_conv_lora_shapes_follow_the_paper():
    # Conv2d LoRA: A is c×r×kh×kw (stored r×c×kh×kw), B is r×f×1×1 (stored f×r×1×1).
    model = _lora_model(rank=3)
    conv = model.down[0].conv
    c, f = conv.base_layer.in_channels, conv.base_layer.out_channels
    assert conv.lora_A["default"].weight.shape == (3, c, 3, 3)
    assert conv.lora_B["default"].weight.shape == (f, 3, 1, 1)


def test_custom_targets_replace_the_default():
    model = _lora_model(targets=["attn.qkv"])
    keys = trainable_state_dict(model)
    assert {k for k in keys if "lora_" in k} == {
        "transformer.attn.qkv.lora_A.weight",
        "transformer.attn.qkv.lora_B.weight",
    }


def test_one_step_changes_only_trainable_parameters():
    model = _lora_model()
    disc = build_discriminator(SIZE, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    source, target = _images(seed=0), -_images(seed=0)  # an "invert" pair
    loss, _ = generator_loss(disc, source, target, model(source), lambda_l1=100.0)
    loss.backward()
    optimiser.step()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed <= trainable
    assert any(".lora_B." in k for k in changed)  # A's gradient is zero while B = 0


def test_trainable_state_dict_is_a_detached_copy_in_parameter_order():
    model = _lora_model()
    state = trainable_state_dict(model)
    assert all(".default." not in k for k in state)  # peft's adapter-name-free keys
    expected_order = [
        n.replace(".default.", ".")
        for n, p in model.named_parameters()
        if p.requires_grad or ".lora_A" in n  # a frozen A is stored too
    ]
    assert list(state) == expected_order
    _randomise_trainable(model)
    assert all(torch.equal(v, torch.zeros_like(v)) for k, v in state.items() if "lora_B" in k)


def test_trainable_state_dict_moves_between_models():
    source, target = _lora_model(), _lora_model()
    _randomise_trainable(source)
    load_trainable_state_dict(target, trainable_state_dict(source))
    x = _images()
    assert torch.equal(target(x), source(x))


def test_load_trainable_state_dict_is_strict_on_keys():
    model = _lora_model()
    state = trainable_state_dict(model)
    missing = dict(list(state.items())[1:])
    with pytest.raises(KeyError, match="missing"):
        load_trainable_state_dict(model, missing)
    with pytest.raises(KeyError, match="unexpected.*head.weight"):
        load_trainable_state_dict(model, {**state, "head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="no LoRA adapter"):
        trainable_state_dict(build_generator(SIZE))


@pytest.mark.parametrize("train_norms", [True, False])
def test_adapter_round_trip_is_bit_identical(tmp_path, train_norms):
    model = _lora_model(train_norms=train_norms)
    _randomise_trainable(model)
    base_fp = fingerprint(build_generator(SIZE, seed=0), SIZE)
    save_adapter(model, SIZE, tmp_path, base_fp)

    assert (tmp_path / WEIGHTS_FILE).exists() and (tmp_path / METADATA_FILE).exists()
    assert not (tmp_path / NORMS_FILE).exists()  # norms travel in peft's own weights file
    meta = read_adapter_metadata(tmp_path)
    assert meta["base_fingerprint"] == base_fp and meta["gan_size"] == SIZE

    loaded = load_adapter(build_generator(SIZE, seed=0), tmp_path, base_fp)
    x = _images(batch=3)
    assert torch.equal(loaded(x), model(x))
    # loaded adapters are ready for fine-tuning: the same trainable set as add_lora's
    assert [n for n, p in loaded.named_parameters() if p.requires_grad] == [
        n for n, p in model.named_parameters() if p.requires_grad
    ]


def test_adapter_config_is_a_real_peft_config(tmp_path):
    model = _lora_model(rank=2, alpha=8.0, train_norms=True)
    save_adapter(model, SIZE, tmp_path, "f" * 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unexpected keyword arguments" for wgen's entry
        config = LoraConfig.from_pretrained(str(tmp_path))
    assert config.r == 2 and config.lora_alpha == 8.0
    assert set(config.target_modules) == set(GAN_SIZES[SIZE].default_lora_targets)
    norm_modules = {key.rsplit(".", 1)[0] for key in norm_parameter_names(model)}
    assert set(config.modules_to_save) == norm_modules
    assert "wgen" not in json.loads((tmp_path / CONFIG_FILE).read_text())


@pytest.mark.parametrize("train_norms", [True, False])
def test_plain_peft_loads_the_adapter_like_wgen_without_a_warning(tmp_path, caplog, train_norms):
    model = _lora_model(train_norms=train_norms)
    _randomise_trainable(model)
    base_fp = fingerprint(build_generator(SIZE, seed=0), SIZE)
    save_adapter(model, SIZE, tmp_path, base_fp)

    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(build_generator(SIZE, seed=0), str(tmp_path))
    assert [str(w.message) for w in caught] == []  # e.g. "Found missing adapter keys"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

    wgen_model = load_adapter(build_generator(SIZE, seed=0), tmp_path, base_fp)
    x = _images(batch=3)
    with torch.no_grad():
        assert torch.equal(peft_model(x), wgen_model(x))
        assert torch.equal(peft_model(x), model(x))


@pytest.mark.parametrize("train_norms", [True, False])
def test_adapter_files_match_what_peft_save_pretrained_writes(tmp_path, train_norms):
    model = _lora_model(train_norms=train_norms)
    save_adapter(model, SIZE, tmp_path / "wgen", "f" * 16)
    config = LoraConfig.from_pretrained(str(tmp_path / "wgen"))
    config.inference_mode = False
    reference = get_peft_model(build_generator(SIZE, seed=0), config)
    reference.save_pretrained(str(tmp_path / "peft"))
    ours, theirs = (load_file(str(tmp_path / d / WEIGHTS_FILE)) for d in ("wgen", "peft"))
    assert set(ours) == set(theirs)
    assert all(key.startswith(PEFT_PREFIX) for key in ours)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_adapters_in_the_first_layout_still_load(tmp_path):
    """Before wgen_adapter.json: metadata inside adapter_config.json, LoRA keys without
    peft's prefix, norms in norms.safetensors."""
    model = _lora_model(train_norms=True)
    _randomise_trainable(model)
    save_adapter(model, SIZE, tmp_path, "f" * 16)
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    (tmp_path / METADATA_FILE).unlink()
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["modules_to_save"] = None
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**config, "wgen": meta}))
    state = {
        k.removeprefix(PEFT_PREFIX): v for k, v in load_file(str(tmp_path / WEIGHTS_FILE)).items()
    }
    norms = {k: state.pop(k) for k in meta["norm_keys"]}
    save_file(state, str(tmp_path / WEIGHTS_FILE))
    save_file(norms, str(tmp_path / NORMS_FILE))

    assert read_adapter_metadata(tmp_path) == meta
    loaded = load_adapter(build_generator(SIZE, seed=0), tmp_path, "f" * 16)
    x = _images()
    assert torch.equal(loaded(x), model(x))


def test_a_peft_adapter_not_written_by_wgen_is_named(tmp_path):
    LoraConfig(target_modules=["attn.qkv"]).save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="not written by wgen"):
        read_adapter_metadata(tmp_path)


def test_adapter_for_another_base_is_refused(tmp_path):
    model = _lora_model(seed=0)
    save_adapter(model, SIZE, tmp_path, fingerprint(build_generator(SIZE, seed=0), SIZE))
    other = build_generator(SIZE, seed=1)
    other_fp = fingerprint(other, SIZE)
    saved_fp = read_adapter_metadata(tmp_path)["base_fingerprint"]
    with pytest.raises(ValueError, match=f"{saved_fp}.*{other_fp}"):
        load_adapter(other, tmp_path, other_fp)
