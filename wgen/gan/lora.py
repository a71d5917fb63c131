"""LoRA adapters on the generator, through peft, and their files on disk.

A concept's weights are the generator's LoRA matrices (peft: a Conv2d LoRA A is c×r×kh×kw,
B is r×f×1×1, as in Gong et al.) plus, where trained, the normalisation layers' affine
parameters. This module injects them, freezes everything else, reads and writes that
trainable set as one state dict, and saves it as a standard peft adapter folder that
``peft.PeftModel.from_pretrained(base_generator, folder)`` loads whole, without a warning:

    adapter_config.json        peft's own LoraConfig JSON; trained norms are listed as its
                               ``modules_to_save`` (the norm modules' names), so peft wraps
                               and fills them
    adapter_model.safetensors  LoRA A and B and the trained norms, under the keys peft's own
                               ``PeftModel.save_pretrained`` writes
                               (``base_model.model.down.0.conv.lora_A.weight``,
                               ``base_model.model.down.0.norm.weight``)
    wgen_adapter.json          wgen's metadata, which peft never reads: base fingerprint,
                               GAN size, trained norm keys, whether A was trained

Adapters written before this layout (metadata under a "wgen" key of adapter_config.json,
keys without the ``base_model.model.`` prefix, norms in ``norms.safetensors``) still load
with `load_adapter`.

Keys of the trainable state dict follow peft's convention (no adapter name:
``down.0.conv.lora_A.weight``) and plain parameter names for norms (``down.0.norm.weight``),
in the model's parameter order, so `wgen.weights.format` can flatten it and rebuild it.
Norm layers are saved by parameter only, so norms with running statistics (BatchNorm) are
not supported as trained norms.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from peft import (
    LoraConfig,
    get_peft_config,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)
from peft.utils import load_peft_weights
from safetensors.torch import load_file, save_file
from torch import nn

from wgen.config import LoRAConfig
from wgen.core.runtime import torch_seed
from wgen.models.gan import gan_size
from wgen.weights.format import cpu_copy, require_same_base

ADAPTER = "default"  # peft adapter name; peft drops it from saved keys
CONFIG_FILE = "adapter_config.json"  # peft's names, so peft itself can read the folder
WEIGHTS_FILE = "adapter_model.safetensors"
METADATA_FILE = "wgen_adapter.json"  # wgen's own entry, beside peft's files
PEFT_PREFIX = "base_model.model."  # what peft's PeftModel.save_pretrained puts before every key
NORMS_FILE = "norms.safetensors"  # adapters written before METADATA_FILE: read, never written
_OLD_META_KEY = "wgen"  # ... and their metadata inside adapter_config.json
_NORM_KEYS_ATTR = "wgen_trained_norm_keys"  # set on the model by add_lora / load_adapter
_NORM_TYPES = (
    nn.GroupNorm,
    nn.LayerNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
)


# ---------------------------------------------------------------------------------------
# Injection and the trainable set
# ---------------------------------------------------------------------------------------


def norm_parameter_names(model: nn.Module) -> list[str]:
    """Names of the affine parameters of every normalisation layer, in parameter order."""
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, _NORM_TYPES):
            prefix = f"{module_name}." if module_name else ""
            names += [prefix + name for name, _ in module.named_parameters(recurse=False)]
    return names


def _inject(
    generator: nn.Module, peft_config: LoraConfig, train_norms: bool, train_a: bool = True
) -> nn.Module:
    """Inject ``peft_config``'s LoRA in place; leave only LoRA B, A (if ``train_a``) and the
    norms (if ``train_norms``) trainable. A frozen A is still part of the stored weights."""
    model = inject_adapter_in_model(peft_config, generator, adapter_name=ADAPTER)
    norm_keys = norm_parameter_names(model) if train_norms else []
    setattr(model, _NORM_KEYS_ATTR, tuple(norm_keys))
    trainable = set(norm_keys)
    for name, param in model.named_parameters():
        is_lora = ".lora_B" in name or (train_a and ".lora_A" in name)
        param.requires_grad_(name in trainable or is_lora)
    return model


def add_lora(generator: nn.Module, cfg: LoRAConfig, size_name: str) -> nn.Module:
    """Inject LoRA with peft's standard init (B = 0, so the output is unchanged) in place.

    A is drawn from ``cfg.init_seed`` (when set) without touching torch's global RNG, so every
    concept starts from the same A and the collected weights share one coordinate system.

    Targets are ``cfg.targets`` or the size preset's default (down/up-sampling convs, the
    output conv and colour skip, the Transformer block's linears). Everything except LoRA B,
    LoRA A if ``cfg.train_a`` and, if ``cfg.train_norms``, the norms' affine parameters is
    frozen.
    Returns ``generator``.
    """
    targets = cfg.targets or gan_size(size_name).default_lora_targets
    peft_config = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        target_modules=list(targets),
        lora_dropout=0.0,
        init_lora_weights=True,
    )
    if cfg.init_seed is None:
        return _inject(generator, peft_config, cfg.train_norms, cfg.train_a)
    with torch_seed(cfg.init_seed):
        return _inject(generator, peft_config, cfg.train_norms, cfg.train_a)


def _trained_norm_keys(model: nn.Module) -> tuple[str, ...]:
    if not hasattr(model, "peft_config"):
        raise ValueError("the model has no LoRA adapter; call add_lora or load_adapter first")
    return getattr(model, _NORM_KEYS_ATTR, ())


def _lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(model, adapter_name=ADAPTER, save_embedding_layers=False)


def _parameter_order(model: nn.Module) -> dict[str, int]:
    """Position of every parameter in the model, under its peft (adapter-name-free) key."""
    suffix = f".{ADAPTER}."
    return {name.replace(suffix, "."): i for i, (name, _) in enumerate(model.named_parameters())}


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The concept's weights: LoRA A/B (peft keys) and trained norms, in parameter order.

    The tensors are detached copies, so a checkpoint taken mid-training stays as it was.
    """
    norm_keys = _trained_norm_keys(model)  # first: it says clearly when there is no adapter
    state = _lora_state_dict(model)
    params = dict(model.named_parameters())
    state.update({key: params[key] for key in norm_keys})
    order = _parameter_order(model)
    return {key: state[key].detach().clone() for key in sorted(state, key=order.__getitem__)}


def _split(state: dict[str, torch.Tensor], norm_keys: tuple[str, ...]):
    """Split a trainable state dict into its LoRA part and its norm part."""
    norms = {k: v for k, v in state.items() if k in norm_keys}
    lora = {k: v for k, v in state.items() if k not in norm_keys}
    return lora, norms


def _load_lora(model: nn.Module, lora: dict[str, torch.Tensor]) -> None:
    """peft's own loading; any key it could not place is an error, not a silent skip."""
    result = set_peft_model_state_dict(model, lora, adapter_name=ADAPTER)
    # missing_keys lists every base weight too (peft loads with strict=False): keep LoRA's.
    missing = sorted(k for k in result.missing_keys if ".lora_" in k)
    if result.unexpected_keys or missing:
        raise KeyError(
            f"LoRA weights do not fit the adapter layers: missing {missing}, "
            f"unexpected {sorted(result.unexpected_keys)}"
        )


@torch.no_grad()
def _load_norms(model: nn.Module, norms: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for key, value in norms.items():
        if params[key].shape != value.shape:  # copy_ would broadcast silently
            raise ValueError(
                f"{key}: shape {tuple(value.shape)}, model has {tuple(params[key].shape)}"
            )
        params[key].copy_(value)


def load_trainable_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put a trainable state dict (from `trainable_state_dict` or the weight format) into
    ``model``; its keys must be exactly the model's trainable keys."""
    expected = set(_lora_state_dict(model)) | set(_trained_norm_keys(model))
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise KeyError(
            f"trainable state dict does not fit the model: missing {missing}, unexpected {extra}"
        )
    lora, norms = _split(state, _trained_norm_keys(model))
    _load_lora(model, lora)
    _load_norms(model, norms)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts: the whole model, its LoRA matrices and trained norm parameters (the
    stored weights), and how many of them are optimised (a frozen A is stored, not trained)."""
    norm_keys = set(getattr(model, _NORM_KEYS_ATTR, ()))
    counts = {"total": 0, "lora": 0, "norms": 0, "optimised": 0}
    for name, param in model.named_parameters():
        counts["total"] += param.numel()
        counts["optimised"] += param.numel() if param.requires_grad else 0
        counts["lora"] += param.numel() if ".lora_" in name else 0
        counts["norms"] += param.numel() if name in norm_keys else 0
    return counts


# ---------------------------------------------------------------------------------------
# Adapter folders
# ---------------------------------------------------------------------------------------


def _norm_modules(norm_keys: tuple[str, ...]) -> list[str]:
    """The norm modules owning ``norm_keys`` (``down.0.norm.weight`` → ``down.0.norm``)."""
    return list(dict.fromkeys(key.rsplit(".", 1)[0] for key in norm_keys))


def save_adapter(
    model: nn.Module, size_name: str, out_dir: str | Path, base_fingerprint: str
) -> Path:
    """Write ``model``'s adapter as a standard peft adapter folder (see the module docstring).

    ``base_fingerprint`` is `wgen.models.gan.fingerprint` of the base generator the
    adapter was trained on; `load_adapter` refuses any other base.
    """
    out_dir = Path(out_dir)
    norm_keys = _trained_norm_keys(model)
    peft_config: LoraConfig = copy.deepcopy(model.peft_config[ADAPTER])
    # peft wraps these modules in a ModulesToSaveWrapper and fills them from the weights file
    peft_config.modules_to_save = _norm_modules(norm_keys) or None
    peft_config.inference_mode = True  # as peft's own save_pretrained writes it
    peft_config.save_pretrained(str(out_dir))
    meta = {
        "base_fingerprint": base_fingerprint,
        "gan_size": size_name,
        "norm_keys": list(norm_keys),
        # whether LoRA A was trained: fine-tuning a loaded adapter keeps the same trainable set
        "train_a": any(p.requires_grad for n, p in model.named_parameters() if ".lora_A" in n),
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    state = {PEFT_PREFIX + key: value for key, value in trainable_state_dict(model).items()}
    save_file(cpu_copy(state), str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    return out_dir


def read_adapter_metadata(adapter_dir: str | Path) -> dict:
    """wgen's metadata of an adapter: base fingerprint, GAN size, norm keys, train_a."""
    adapter_dir = Path(adapter_dir)
    if (adapter_dir / METADATA_FILE).exists():
        return json.loads((adapter_dir / METADATA_FILE).read_text())
    config = json.loads((adapter_dir / CONFIG_FILE).read_text())
    if _OLD_META_KEY not in config:
        raise ValueError(
            f"{adapter_dir} is a peft adapter but was not written by wgen (no {METADATA_FILE})"
        )
    return config[_OLD_META_KEY]


def load_adapter(
    generator: nn.Module, adapter_dir: str | Path, expected_fingerprint: str
) -> nn.Module:
    """Inject the adapter saved in ``adapter_dir`` into the base ``generator`` (in place).

    ``expected_fingerprint`` is the fingerprint of ``generator``; an adapter made for
    another base is a ``ValueError``. The LoRA is injected from the saved peft config and
    filled with peft's own loader; trained norms are restored in place (not wrapped as
    peft's ``modules_to_save`` would), and the result is frozen like `add_lora`'s, ready for
    fine-tuning. Reads both adapter layouts (see the module docstring). Returns ``generator``.
    """
    adapter_dir = Path(adapter_dir)
    meta = read_adapter_metadata(adapter_dir)
    require_same_base(expected_fingerprint, meta["base_fingerprint"], f"adapter {adapter_dir}")
    config = json.loads((adapter_dir / CONFIG_FILE).read_text())
    config.pop(_OLD_META_KEY, None)
    config["modules_to_save"] = None  # norms stay plain parameters, as add_lora leaves them
    norm_keys = tuple(meta["norm_keys"])
    train_a = meta.get("train_a", True)  # adapters written before the field trained A
    model = _inject(generator, get_peft_config(config), bool(norm_keys), train_a)
    if norm_keys != _trained_norm_keys(model):
        raise ValueError(f"adapter {adapter_dir} trains norms {norm_keys} this generator lacks")
    device = str(next(model.parameters()).device)
    weights = load_peft_weights(str(adapter_dir), device=device)
    state = {key.removeprefix(PEFT_PREFIX): value for key, value in weights.items()}
    if (adapter_dir / NORMS_FILE).exists():
        state.update(load_file(str(adapter_dir / NORMS_FILE), device=device))
    load_trainable_state_dict(model, state)
    return model
