"""Image editors: turn (source images, concept texts) into edited target images.

Every editor is a callable ``editor(images, texts) -> images`` on uint8 (N, H, W, 3) batches
with one concept text per image. ``build_editor`` picks one from the data config.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from wgen.config import DataConfig

EDITORS = ("procedural", "instruct-pix2pix")


class Editor(Protocol):
    def __call__(self, images: np.ndarray, texts: list[str]) -> np.ndarray: ...


def build_editor(cfg: DataConfig) -> Editor:
    """The editor named by ``cfg.editor``, built inside the process that will use it."""
    if cfg.editor == "procedural":
        from wgen.data.editors.procedural import ProceduralEditor

        return ProceduralEditor()
    if cfg.editor == "instruct-pix2pix":
        if not cfg.editor_model_dir:
            raise ValueError(
                "data.editor=instruct-pix2pix needs data.editor_model_dir: a local diffusers "
                "InstructPix2Pix folder (e.g. a saved copy of timbrooks/instruct-pix2pix); "
                "nothing is downloaded at run time"
            )
        from wgen.data.editors.instruct_pix2pix import InstructPix2PixEditor

        return InstructPix2PixEditor(
            cfg.editor_model_dir,
            num_inference_steps=cfg.editor_steps,
            image_guidance_scale=cfg.editor_image_guidance,
            guidance_scale=cfg.editor_guidance,
            seed=cfg.seed,
            max_batch=cfg.editor_max_batch,
        )
    raise ValueError(f"unknown data.editor {cfg.editor!r}; valid editors: {', '.join(EDITORS)}")
