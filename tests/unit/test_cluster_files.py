"""Weights a cluster node reads back from shared storage are safetensors, checked on load:
a base GAN whose values were changed after it was saved is refused with a clear error, as
is a file that is not safetensors at all (no pickle is ever loaded)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from wgen.config import load_config
from wgen.gan.training import BaseGAN
from wgen.models.gan import build_discriminator, build_generator, fingerprint

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def base_folder(tmp_path) -> Path:
    size = load_config("tiny").gan.size
    generator, discriminator = build_generator(size, seed=0), build_discriminator(size, seed=1)
    BaseGAN(
        size=size,
        generator=generator.state_dict(),
        discriminator=discriminator.state_dict(),
        fingerprint=fingerprint(generator, size),
    ).save(tmp_path / "base")
    return tmp_path / "base"


def test_a_tampered_base_generator_is_refused(base_folder):
    BaseGAN.load(base_folder)  # intact: loads
    path = base_folder / "generator.safetensors"
    state = load_file(str(path))
    name = next(iter(state))
    state[name] = state[name] + 1e-3  # a valid safetensors file with other values
    save_file(state, str(path))
    with pytest.raises(ValueError, match="changed after they were saved"):
        BaseGAN.load(base_folder)


def test_a_base_file_that_is_not_safetensors_is_refused(base_folder):
    path = base_folder / "generator.safetensors"
    torch.save({"x": torch.zeros(1)}, path)  # a pickle-based torch file under the same name
    with pytest.raises(Exception, match=r"(?i)header|safetensor|deserializ"):
        BaseGAN.load(base_folder)
    path.write_bytes(os.urandom(200))
    with pytest.raises(Exception, match=r"(?i)header|safetensor|deserializ"):
        BaseGAN.load(base_folder)


def test_no_pickle_loading_in_the_package():
    """No pickle, no torch.load without weights_only=True, and every from_pretrained of
    model weights asks for safetensors."""
    problems = []
    for path in sorted((ROOT / "wgen").rglob("*.py")) + sorted((ROOT / "rayjobs").rglob("*.py")):
        text = path.read_text()
        for match in re.finditer(
            r"^(?!\s*#).*\b(import pickle|pickle\.load|torch\.load\()", text, re.M
        ):
            problems.append(f"{path.name}: {match.group(0).strip()}")
        for call in re.finditer(r"(\w+)\.from_pretrained\((.*?)\)\n", text, re.S):
            line_start = text.rfind("\n", 0, call.start()) + 1
            if "``" in text[line_start : call.start()]:
                continue  # named in a docstring, not called
            if call.group(1) in ("AutoTokenizer", "CLIPTokenizer"):
                continue  # tokenizers hold no weights
            if "use_safetensors=True" not in call.group(2):
                problems.append(
                    f"{path.name}: {call.group(1)}.from_pretrained without use_safetensors"
                )
    torch_loads = [p for p in problems if "torch.load" in p and "weights_only=True" in p]
    assert not [p for p in problems if p not in torch_loads], problems
