"""Per-step times of the bench's three costs on this machine's device: a pix2pix step of the
whole GAN (scratch), a LoRA-only step (every LoRA method), and one-step weight generation
(the denoiser's single forward over all N blocks of a concept's LoRA).

Run by `benchmarks/gpu_bench.sh` on a lent GPU; on a CPU it measures the CPU. The models are
the GAN and denoiser sizes the presets name (`--sizes demo cluster`), random-initialised:
a step costs the same whatever the weights. Times are medians over `--steps` after
`--warmup` steps, synchronised with the device.

    .venv/bin/python benchmarks/gpu_step_times.py --sizes demo cluster --steps 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from wgen.config import load_config
from wgen.core.devices import current_device
from wgen.diffusion import sample_single_step
from wgen.gan.lora import add_lora, trainable_state_dict
from wgen.gan.training import ConceptPairs, Pix2PixTrainer
from wgen.generator.diffusion import block_cond, denoiser_schedule
from wgen.models.denoiser import build_denoiser
from wgen.models.gan import GAN_SIZES, build_discriminator, build_generator

PRESET_OF_SIZE = {"tiny": "tiny", "demo": "demo", "cluster": "cluster"}  # GAN size → preset


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(step, device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronise(device)
        start = time.perf_counter()
        step()
        synchronise(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_pairs(size: int, count: int, seed: int = 0) -> ConceptPairs:
    rng = np.random.default_rng(seed)
    sources = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    targets = 255 - sources
    return ConceptPairs("c0", "invert", "train", sources, targets, sources[:2], targets[:2])


def gan_steps(size: str, device: torch.device, warmup: int, steps: int) -> dict[str, float]:
    config = load_config(PRESET_OF_SIZE[size])
    pairs = random_pairs(GAN_SIZES[size].image_size, max(config.gan.batch_size, 4))
    scratch = Pix2PixTrainer(
        build_generator(size, seed=0).to(device),
        build_discriminator(size, seed=1).to(device),
        config.gan,
        config.gan.lr,
        pairs,
        0,
    )
    lora_model = add_lora(build_generator(size, seed=0), config.lora, size).to(device)
    lora = Pix2PixTrainer(
        lora_model,
        build_discriminator(size, seed=1).to(device),
        config.gan,
        config.lora.lr,
        pairs,
        0,
    )
    lora_values = sum(v.numel() for v in trainable_state_dict(lora_model).values())
    return {
        "image_size": GAN_SIZES[size].image_size,
        "batch_size": config.gan.batch_size,
        "scratch_step_s": median_seconds(scratch.step, device, warmup, steps),
        "lora_step_s": median_seconds(lora.step, device, warmup, steps),
        "lora_values": lora_values,
    }


def generation_step(size: str, device: torch.device, warmup: int, steps: int) -> dict[str, float]:
    """One direct denoising step for all N blocks of the size's LoRA, text as 32 tokens of
    the preset's encoder width (MiniLM 384, CLIP large 768)."""
    config = load_config(PRESET_OF_SIZE[size])
    lora_model = add_lora(build_generator(size, seed=0), config.lora, size)
    values = sum(v.numel() for v in trainable_state_dict(lora_model).values())
    block = config.denoiser.block_size
    n_blocks = -(-values // block)  # groups are padded per group in the real layout: ≥ this
    text_dim = 768 if "clip" in config.train.text_encoder else 384
    denoiser_cfg = dataclasses.replace(config.denoiser)
    model = build_denoiser(denoiser_cfg, text_dim, n_blocks=n_blocks).to(device).eval()
    schedule = denoiser_schedule(denoiser_cfg)
    n = torch.arange(n_blocks, device=device)
    text = torch.randn(1, 32, text_dim, device=device)
    cond = block_cond(n, text)
    t = min(config.generate.single_step_t, schedule.num_timesteps - 1)

    def step() -> None:
        sample_single_step(schedule, model, t, (n_blocks, 1, block), device=device, cond=cond)

    return {
        "blocks": n_blocks,
        "block_size": block,
        "generation_s": median_seconds(step, device, warmup, steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", nargs="+", default=["demo", "cluster"], choices=list(PRESET_OF_SIZE)
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = current_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    results = {"device": name, "sizes": {}}
    for size in args.sizes:
        row = {**gan_steps(size, device, args.warmup, args.steps)}
        row.update(generation_step(size, device, args.warmup, args.steps))
        results["sizes"][size] = row
        print(
            f"{size}: {row['image_size']} px, batch {row['batch_size']}: scratch step "
            f"{row['scratch_step_s'] * 1000:.1f} ms, LoRA step {row['lora_step_s'] * 1000:.1f} ms "
            f"({row['lora_values']} LoRA values); one-step generation of {row['blocks']} blocks "
            f"of b = {row['block_size']}: {row['generation_s'] * 1000:.1f} ms"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
