"""The InstructPix2Pix editor's code path on a tiny, randomly initialised pipeline.

No weights can be downloaded here, so the test builds every component from tiny configs
(like diffusers' own fast tests), saves the pipeline to a folder and loads it back through
the editor exactly as a cluster run would load a real local model folder.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest

from wgen.config import DataConfig
from wgen.data.editors import build_editor

pytestmark = pytest.mark.timeout(60)


def _write_tiny_clip_tokenizer(folder: Path) -> None:
    """A character-level CLIP BPE vocabulary: every letter, alone and word-final, no merges."""
    characters = string.ascii_lowercase + string.digits + ",.-'"
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    tokens += [c for c in characters] + [f"{c}</w>" for c in characters]
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("ip2p")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=16,
        in_channels=8,  # 4 noisy latents + 4 source-image latents: InstructPix2Pix's conditioning
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        norm_num_groups=8,
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    _write_tiny_clip_tokenizer(root / "vocab")
    tokenizer = CLIPTokenizer.from_pretrained(root / "vocab", model_max_length=77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    pipeline = StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(skip_prk_steps=True),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    model_dir = root / "model"
    pipeline.save_pretrained(model_dir)
    return model_dir


def test_editor_edits_a_batch_from_a_saved_pipeline(tiny_pipeline_dir: Path) -> None:
    cfg = DataConfig(
        editor="instruct-pix2pix", editor_model_dir=str(tiny_pipeline_dir), editor_steps=2
    )
    editor = build_editor(cfg)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    texts = ["apply a strong sepia tone", "make it slightly blurry"]
    edited = editor(images, texts)
    assert edited.shape == images.shape
    assert edited.dtype == np.uint8
    # Seeded per call: the same inputs give the same edits.
    np.testing.assert_array_equal(editor(images, texts), edited)


def test_output_is_resized_back_to_an_odd_input_size(tiny_pipeline_dir: Path) -> None:
    from wgen.data.editors.instruct_pix2pix import InstructPix2PixEditor

    editor = InstructPix2PixEditor(tiny_pipeline_dir, num_inference_steps=1, max_batch=1)
    images = np.zeros((2, 21, 27, 3), dtype=np.uint8)  # not a multiple of the VAE factor
    edited = editor(images, ["invert", "blur"])
    assert edited.shape == images.shape and edited.dtype == np.uint8


def test_missing_model_dir_names_path_and_expected_files(tmp_path: Path) -> None:
    from wgen.data.editors.instruct_pix2pix import InstructPix2PixEditor

    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist.*model_index.json"):
        InstructPix2PixEditor(missing)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "model_index.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="partial lacks unet, vae"):
        InstructPix2PixEditor(tmp_path / "partial")


def test_build_editor_requires_a_model_dir() -> None:
    with pytest.raises(ValueError, match="editor_model_dir"):
        build_editor(DataConfig(editor="instruct-pix2pix"))
