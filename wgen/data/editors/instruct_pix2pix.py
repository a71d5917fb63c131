"""InstructPix2Pix editor (Brooks et al., 2023): the paper's way of making edited targets.

Wraps diffusers' ``StableDiffusionInstructPix2PixPipeline`` loaded from a *local* folder
(nothing is downloaded). diffusers and torch are imported inside the class, because every
Ray worker imports this module and most never use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wgen.data.images import check_images

# What ``save_pretrained`` writes for this pipeline; the checkpoints hold the weights.
EXPECTED_CONTENTS = "model_index.json plus unet/, vae/, text_encoder/, tokenizer/ and scheduler/"


def check_model_dir(model_dir: str | Path) -> Path:
    """Fail early, naming the path and the expected layout, if ``model_dir`` is not a pipeline folder."""
    path = Path(model_dir)
    hint = (
        f"expected a diffusers InstructPix2Pix folder saved by save_pretrained ({EXPECTED_CONTENTS}), "
        "e.g. a local copy of timbrooks/instruct-pix2pix"
    )
    if not path.is_dir():
        raise FileNotFoundError(f"InstructPix2Pix model folder {path} does not exist; {hint}")
    missing = [
        name
        for name in ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")
        if not (path / name).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"InstructPix2Pix model folder {path} lacks {', '.join(missing)}; {hint}"
        )
    return path


class InstructPix2PixEditor:
    """Edits a batch with one instruction per image; output resized back to the input size.

    Seeded per call, so the same images and texts always give the same edits (a re-run or
    a retried Ray task reproduces its pairs).
    """

    def __init__(
        self,
        model_dir: str | Path,
        num_inference_steps: int = 20,
        image_guidance_scale: float = 1.5,  # how closely to keep the source (paper default)
        guidance_scale: float = 7.5,  # how strongly to follow the text
        seed: int = 0,
        device: str | None = None,  # None: cuda if available, else cpu
        max_batch: int = 8,  # images per pipeline call, bounds GPU memory
    ):
        import torch
        from diffusers import StableDiffusionInstructPix2PixPipeline

        path = check_model_dir(model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        try:
            # The safety checker is dropped: it blanks images it flags, which would corrupt pairs.
            pipeline = StableDiffusionInstructPix2PixPipeline.from_pretrained(
                path,
                local_files_only=True,
                use_safetensors=True,  # never a pickled .bin from a user folder
                safety_checker=None,
                requires_safety_checker=False,
            )
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(
                f"cannot load an InstructPix2Pix pipeline from {path} ({err}); "
                f"expected {EXPECTED_CONTENTS}"
            ) from err
        # Cast after loading: the dtype argument of from_pretrained changed name across versions.
        self.pipeline = pipeline.to(self.device, dtype)
        self.pipeline.set_progress_bar_config(disable=True)
        self.num_inference_steps = num_inference_steps
        self.image_guidance_scale = image_guidance_scale
        self.guidance_scale = guidance_scale
        self.seed = seed
        self.max_batch = max_batch

    def _edit(self, images: np.ndarray, texts: list[str], generator: Any) -> np.ndarray:
        """One pipeline call → float images in [0, 1] at the pipeline's working size."""
        return self.pipeline(
            prompt=texts,
            image=[Image.fromarray(image) for image in images],
            num_inference_steps=self.num_inference_steps,
            image_guidance_scale=self.image_guidance_scale,
            guidance_scale=self.guidance_scale,
            generator=generator,
            output_type="np",
        ).images

    def __call__(self, images: np.ndarray, texts: list[str]) -> np.ndarray:
        import torch

        check_images(images, allow_empty=True)
        if len(texts) != len(images):
            raise ValueError(f"got {len(images)} images but {len(texts)} texts; need one per image")
        height, width = images.shape[1:3]
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        out = np.empty_like(images)
        for start in range(0, len(images), self.max_batch):
            stop = start + self.max_batch
            edited = self._edit(images[start:stop], list(texts[start:stop]), generator)
            for i, image in enumerate(edited, start):
                pil = Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8))
                if pil.size != (width, height):
                    # The pipeline works at multiples of the VAE factor; come back to the input size.
                    pil = pil.resize((width, height), Image.Resampling.LANCZOS)
                out[i] = np.asarray(pil)
        return out
