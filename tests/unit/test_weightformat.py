"""The weight format: manifest, selection, grouping; flatten and unflatten are exact inverses."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from wgen.config import LoRAConfig
from wgen.gan.lora import add_lora, load_trainable_state_dict, trainable_state_dict
from wgen.models.gan import build_generator, fingerprint
from wgen.weights.format import (
    Manifest,
    Selection,
    WeightFormatError,
    build_manifest,
    check_compatible,
    cpu_copy,
    flatten,
    group_name,
    unflatten,
)

FP = "0123456789abcdef"


def _lora_state() -> tuple[nn.Module, dict[str, torch.Tensor], str]:
    """A LoRA-injected tiny generator whose LoRA and norms are random (non-zero)."""
    base = build_generator("tiny", seed=0)
    base_fp = fingerprint(base, "tiny")
    model = add_lora(base, LoRAConfig(rank=2), "tiny")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=g))
    return model, trainable_state_dict(model), base_fp


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
    )


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    ("key", "group"),
    [
        ("down.0.conv.lora_A.weight", "down.0.conv"),
        ("down.0.conv.lora_B.weight", "down.0.conv"),
        ("res.0.norm1.bias", "res.0.norm1"),
        ("net.4.weight", "net.4"),
        ("scale", "scale"),
    ],
)
def test_group_name(key, group):
    assert group_name(key) == group


def test_lora_round_trip_is_bit_exact():
    model, state, base_fp = _lora_state()
    manifest = build_manifest(state, Selection(), base_fp)
    vectors = flatten(state, manifest)
    assert all(v.dtype == np.float32 and v.ndim == 1 for v in vectors)
    assert (
        sum(len(v) for v in vectors)
        == manifest.total_numel
        == sum(t.numel() for t in state.values())
    )
    rebuilt = unflatten(vectors, manifest)
    _assert_same_state(rebuilt, state)
    load_trainable_state_dict(model, rebuilt)  # the inverse is a loadable peft state dict
    for vector in vectors:  # rows read from Parquet or Ray's object store are read-only
        vector.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on read-only arrays
        _assert_same_state(unflatten(vectors, manifest), state)


def test_lora_groups_are_layers_in_parameter_order():
    _, state, base_fp = _lora_state()
    manifest = build_manifest(state, Selection(), base_fp)
    conv = next(g for g in manifest.groups if g.name == "down.0.conv")
    assert [e.key for e in conv.entries] == [
        "down.0.conv.lora_A.weight",
        "down.0.conv.lora_B.weight",
    ]
    assert [e.offset for e in conv.entries] == [0, conv.entries[0].numel]
    norm = next(g for g in manifest.groups if g.name == "down.0.norm")
    assert [e.key.rsplit(".", 1)[1] for e in norm.entries] == ["weight", "bias"]
    assert manifest.keys == list(state)  # groups follow the state dict's (parameter) order


def test_pdiff_selection_of_last_layers_round_trips():
    model = _mlp()
    selection = Selection.last_layers(model, 2)
    manifest = build_manifest(model.state_dict(), selection, FP)
    assert [g.name for g in manifest.groups] == ["2", "4"]
    assert manifest.keys == ["2.weight", "2.bias", "4.weight", "4.bias"]
    rebuilt = unflatten(flatten(model.state_dict(), manifest), manifest)
    _assert_same_state(rebuilt, {k: model.state_dict()[k] for k in manifest.keys})
    fresh = _mlp()
    with torch.no_grad():
        for layer in (fresh[2], fresh[4]):
            layer.weight.zero_()
    fresh.load_state_dict(rebuilt, strict=False)
    x = torch.randn(5, 8)
    assert torch.equal(fresh(x), model(x))


def test_regex_selection_with_exclude():
    selection = Selection(include=(r"\.weight$",), exclude=(r"^0\.",))
    manifest = build_manifest(_mlp().state_dict(), selection, FP)
    assert manifest.keys == ["2.weight", "4.weight"]


def test_manifest_json_round_trip():
    _, state, base_fp = _lora_state()
    manifest = build_manifest(state, Selection(include=("lora_",)), base_fp)
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.total_numel == manifest.total_numel


def test_half_precision_round_trip_is_exact():
    state = {k: v.to(torch.bfloat16) for k, v in _mlp().state_dict().items()}
    manifest = build_manifest(state, Selection(), FP)
    assert manifest.dtype == "bfloat16"
    _assert_same_state(unflatten(flatten(state, manifest), manifest), state)


def test_unflatten_accepts_tensors():
    state = _mlp().state_dict()
    manifest = build_manifest(state, Selection(), FP)
    vectors = [torch.from_numpy(v).requires_grad_() for v in flatten(state, manifest)]
    _assert_same_state(unflatten(vectors, manifest), state)


def test_check_compatible_names_both_fingerprints():
    manifest = build_manifest(_mlp().state_dict(), Selection(), FP)
    check_compatible(manifest, FP)
    with pytest.raises(ValueError, match=f"{FP}.*feedfacefeedface"):
        check_compatible(manifest, "feedfacefeedface")


def test_wrong_vectors_are_clear_errors():
    state = _mlp().state_dict()
    manifest = build_manifest(state, Selection(), FP)
    vectors = flatten(state, manifest)
    with pytest.raises(WeightFormatError, match="got 2 vectors for 3 groups"):
        unflatten(vectors[:2], manifest)
    with pytest.raises(WeightFormatError, match="group 0: vector of 143 values, manifest says 144"):
        unflatten([vectors[0][:-1], *vectors[1:]], manifest)


def test_state_dict_that_does_not_fit_is_a_clear_error():
    state = _mlp().state_dict()
    manifest = build_manifest(state, Selection(), FP)
    with pytest.raises(WeightFormatError, match="lacks '0.bias'"):
        flatten({k: v for k, v in state.items() if k != "0.bias"}, manifest)
    with pytest.raises(WeightFormatError, match="0.weight: shape"):
        flatten({**state, "0.weight": torch.zeros(3, 3)}, manifest)


def test_selection_and_dtype_errors():
    state = _mlp().state_dict()
    with pytest.raises(WeightFormatError, match="selects none"):
        build_manifest(state, Selection(include=("nothing",)), FP)
    with pytest.raises(WeightFormatError, match="dtypes"):
        build_manifest({k: v.double() for k, v in state.items()}, Selection(), FP)
    with pytest.raises(WeightFormatError, match="last 9 layers"):
        Selection.last_layers(_mlp(), 9)


def test_cpu_copy_is_detached_contiguous_and_not_a_view():
    layer = nn.Linear(3, 2)
    state = {"w": layer.weight, "t": torch.arange(6.0).view(2, 3).t()}
    copy = cpu_copy(state)
    assert all(v.is_contiguous() and not v.requires_grad for v in copy.values())
    assert torch.equal(copy["t"], state["t"])
    with torch.no_grad():
        layer.weight.add_(1.0)
    assert not torch.equal(copy["w"], layer.weight)  # a copy, even of a CPU tensor
