"""Stage 5: weights for a new concept from a trained generator, as an adapter folder.

`run_generate` needs only the generator folder (`wgen.generator.checkpoint`: it carries its config,
statistics, manifest and a copy of the base model). It embeds the text, denoises all N blocks
at once (1 direct step or N DDIM steps), writes the base model's standard adapter
(`BaseModel.export`, which checks that it loads back: for the GAN a peft adapter,
`wgen.gan.lora`), and prints how long the generation took. torch's thread count is the
caller's again afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from wgen.core.devices import current_device
from wgen.core.runtime import print0, torch_threads
from wgen.generator.checkpoint import WeightGenerator
from wgen.generator.text import check_concept_text
from wgen.models.base import load_base_model


def run_generate(
    generator_dir: Path,
    concept_text: str,
    out_dir: Path,
    steps: int | None = None,
    seed: int | None = None,
    base_dir: Path | None = None,
    guidance: float | None = None,
) -> dict[str, Any]:
    """Write a generated LoRA adapter for ``concept_text`` to ``out_dir``.

    ``guidance``: the classifier-free guidance weight w (None = the generator's own
    ``generate.guidance``); a distilled w-student takes it as an input.

    ``base_dir`` names the base model the adapter is meant for, when it is not the
    generator's own copy: a base of another fingerprint is refused before anything is
    generated.
    """
    text = check_concept_text(concept_text)  # before seconds of loading
    start = time.perf_counter()
    generator = WeightGenerator.load(Path(generator_dir))
    # The denoiser on this process's device (a GPU in a Ray task given one, else the CPU); the
    # noise is drawn on the CPU from the seed, so a seed gives the same LoRA on any device.
    device = current_device()
    generator.denoiser.to(device)
    fingerprint = generator.fingerprint
    if base_dir is not None:
        fingerprint = load_base_model(Path(base_dir), generator.config).fingerprint
        generator.check_base(fingerprint)
    # the caller's thread count comes back afterwards (a notebook, the demo's next stage)
    with torch_threads(generator.config.generate.threads):
        generator.encoder  # noqa: B018 - load τ now, so the time below is the generation
        load_seconds = time.perf_counter() - start
        gen = generator.generate_config(steps, seed, guidance)
        path, seconds = generator.write_adapter(
            text, Path(out_dir), gen.steps, gen.seed, gen.guidance
        )
    method = "1 direct step" if gen.steps == 1 else f"{gen.steps} DDIM steps"
    if gen.guidance:
        how = "w as the student's input" if generator.guidance_input else "two passes per step"
        method += f", guidance w = {gen.guidance:g} ({how})"
    print0(
        f"generate: weights for {text!r} in {seconds * 1000:.1f} ms ({method} over all "
        f"{generator.layout.n_blocks} blocks, seed {gen.seed}; loading took {load_seconds:.1f} s) "
        f"→ {path}"
    )
    return {
        "adapter": str(path),
        "concept_text": text,
        "steps": gen.steps,
        "seed": gen.seed,
        "guidance": gen.guidance,
        "seconds": seconds,
        "load_seconds": load_seconds,
        "device": str(device),
        "base_fingerprint": fingerprint,
    }
