"""GAN training without Ray: the base generator, per-concept LoRA, and pix2pix from scratch.

Pure functions on arrays and modules (docs/architecture.md, rule 2): the Ray actor pool in
`wgen.collect.stage` and the benchmark only call these. One loop (`train_until_converged`) serves
every method, so LoRA, scratch and generated initialisations are trained and stopped by
exactly the same rule.
"""

from __future__ import annotations

import copy
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from wgen.config import CollectConfig, Config, GANConfig, LoRAConfig
from wgen.core.devices import current_device, precision_for
from wgen.core.runtime import read_json, torch_seed, torch_threads, write_json
from wgen.data.images import decode_png
from wgen.gan.convergence import ConvergenceMonitor, GrowingWindowMonitor
from wgen.gan.lora import (
    add_lora,
    count_parameters,
    load_trainable_state_dict,
    trainable_state_dict,
)
from wgen.gan.losses import discriminator_loss, generator_loss
from wgen.gan.metrics import FeatureExtractor, ReferenceStats, evaluate_generator, uint8_to_model
from wgen.models.base import BASE_FILE
from wgen.models.gan import build_discriminator, build_generator, fingerprint
from wgen.weights.format import Manifest, Selection, build_manifest, cpu_copy


def concept_seed(seed: int, concept_id: str) -> int:
    """A stable per-concept seed: the same concept trains identically in any actor or order."""
    return (seed * 1_000_003 + zlib.crc32(concept_id.encode())) % (2**31)


@dataclass
class ConceptPairs:
    """One concept's pairs, split into training pairs and held-back evaluation pairs."""

    concept_id: str
    text: str
    split: str
    train_sources: np.ndarray  # uint8 (N, H, W, 3)
    train_targets: np.ndarray
    eval_sources: np.ndarray  # uint8 (E, H, W, 3), never trained on
    eval_targets: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, eval_pairs: int) -> ConceptPairs:
        """Rows of one concept (decoded images in `source`/`target`) → train/eval split.

        The last `eval_pairs` rows by image id are held back, so the split does not depend on
        the order in which Ray delivered the rows.
        """
        ids = frame["concept_id"].unique()
        if len(ids) != 1:
            raise ValueError(f"ConceptPairs needs the rows of one concept, got {list(ids)}")
        frame = frame.sort_values("image_id", kind="stable")
        if len(frame) <= eval_pairs:
            raise ValueError(
                f"concept {ids[0]} has {len(frame)} pairs; it needs more than "
                f"collect.eval_pairs={eval_pairs} (raise data.pairs_per_concept)"
            )
        sources = decode_png(list(frame["source_png"]))
        targets = decode_png(list(frame["target_png"]))
        cut = len(frame) - eval_pairs
        return cls(
            concept_id=str(ids[0]),
            text=str(frame["concept_text"].iloc[0]),
            split=str(frame["split"].iloc[0]),
            train_sources=sources[:cut],
            train_targets=targets[:cut],
            eval_sources=sources[cut:],
            eval_targets=targets[cut:],
        )


def concept_pairs(frame: pd.DataFrame, collect: CollectConfig) -> list[ConceptPairs]:
    return [
        ConceptPairs.from_frame(group, collect.eval_pairs)
        for _, group in frame.groupby("concept_id", sort=True)
    ]


@dataclass
class Evaluator:
    """Scores a generator on fixed evaluation pairs: paired L1 / PSNR and a Fréchet distance
    against reference statistics of the targets computed once."""

    sources: np.ndarray
    targets: np.ndarray
    extractor: FeatureExtractor
    reference: ReferenceStats = field(init=False)

    def __post_init__(self) -> None:
        self.reference = ReferenceStats.from_images(self.targets, self.extractor)

    def __call__(self, generator: nn.Module) -> dict[str, float]:
        return evaluate_generator(
            generator, self.sources, self.targets, self.extractor, self.reference
        )


class Pix2PixTrainer:
    """One pix2pix optimisation: D step on (real, fake) pairs, then G step on adv + λ·L1.

    Only the generator's parameters with ``requires_grad`` are optimised, so the same class
    trains a whole generator (base, scratch) or only its LoRA (+ norms). It trains on the
    generator's device (put both networks there first) with mixed precision where that device
    supports it (`wgen.core.devices`: bf16/fp16 autocast on CUDA, plain fp32 on the CPU).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        gan: GANConfig,
        lr: float,
        pairs: ConceptPairs | list[ConceptPairs],
        seed: int,
    ) -> None:
        self.generator, self.discriminator, self.gan = generator, discriminator, gan
        parameters = [p for p in generator.parameters() if p.requires_grad]
        if not parameters:
            raise ValueError("the generator has no trainable parameters")
        self.g_optimizer = torch.optim.Adam(parameters, lr=lr, betas=(0.5, 0.999))
        self.d_optimizer = torch.optim.Adam(
            discriminator.parameters(), lr=gan.lr, betas=(0.5, 0.999)
        )
        pair_list = pairs if isinstance(pairs, list) else [pairs]
        # The training pairs live on the generator's device: no per-step host → device copies.
        device = next(generator.parameters()).device
        self.sources = uint8_to_model(np.concatenate([p.train_sources for p in pair_list])).to(
            device
        )
        self.targets = uint8_to_model(np.concatenate([p.train_targets for p in pair_list])).to(
            device
        )
        self.precision = precision_for(device)
        self.rng = np.random.default_rng(seed)
        self.steps = 0

    def step(self) -> dict[str, float]:
        batch = self.rng.choice(
            len(self.sources),
            size=self.gan.batch_size,
            replace=len(self.sources) < self.gan.batch_size,
        )
        source, target = self.sources[batch], self.targets[batch]
        with self.precision.autocast():
            fake = self.generator(source)
            d_loss, d_parts = discriminator_loss(self.discriminator, source, target, fake)
        self.precision.step(d_loss, self.d_optimizer)
        with self.precision.autocast():
            g_loss, g_parts = generator_loss(
                self.discriminator, source, target, fake, self.gan.lambda_l1
            )
        self.precision.step(g_loss, self.g_optimizer)
        self.steps += 1
        return {**d_parts, **g_parts}

    def state(self) -> dict[str, Any]:
        """A copy of the networks and optimisers, for `restore`. The batch sampler is left
        out: after a restore the run draws new batches instead of replaying its drift."""
        return copy.deepcopy(
            {
                "generator": self.generator.state_dict(),
                "discriminator": self.discriminator.state_dict(),
                "g_optimizer": self.g_optimizer.state_dict(),
                "d_optimizer": self.d_optimizer.state_dict(),
            }
        )

    def restore(self, state: dict[str, Any]) -> None:
        """Go back to a `state` taken earlier; `steps` keeps counting the work done."""
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])


@dataclass
class TrainingRun:
    """What one training run did: its evaluations, where it converged, and its checkpoints."""

    status: str  # "converged" | "not_converged" | "nan"
    reason: str  # human-readable cause for anything but "converged"
    # {"step", "seconds", "train_seconds", "l1", "psnr", "fd"} per evaluation; train_seconds
    # leaves the evaluations' own time out (the benchmark's time-to-converge)
    history: list[dict[str, float]]
    converged_step: int | None
    checkpoints: list[dict[str, Any]]  # {"step", "metrics", "state"} after convergence
    seconds: float
    # The step whose weights the run went back to when it drifted away from its best
    # (`ConvergenceMonitor.drifted`); None when it converged where it stood.
    restored_step: int | None = None

    @property
    def converged(self) -> bool:
        return self.status == "converged"


def train_until_converged(
    trainer: Pix2PixTrainer,
    evaluate: Callable[[nn.Module], dict[str, float]],
    collect: CollectConfig,
    k_checkpoints: int = 0,
    snapshot: Callable[[nn.Module], dict[str, torch.Tensor]] | None = None,
    metric: str = "l1",
    monitor: ConvergenceMonitor | GrowingWindowMonitor | None = None,
    end_at_best: bool = False,
) -> TrainingRun:
    """Train, evaluating every `eval_every` steps, until `metric` stops improving; then take
    `k_checkpoints` snapshots `checkpoint_every` steps apart (the paper's K post-convergence
    checkpoints). Step 0 is evaluated too, so every curve starts at the initialisation.

    `evaluate` is any callable generator → metrics (the benchmark passes a cheap paired-L1
    one); each history entry carries the seconds since the start with and without the time
    spent evaluating.

    With `collect.restore_best`, a run that drifts away from its best and stays away
    (`ConvergenceMonitor.drifted`) goes back to the trainer's state at its best evaluation and
    counts as converged there: `converged_step` is the step reached (the work done),
    `restored_step` the step whose weights it kept. The K checkpoints continue from there.

    ``monitor`` replaces the collection's rule (the bench passes its `GrowingWindowMonitor`).
    With ``end_at_best`` every run, converged or stopped at `max_steps`, ends with the
    trainer's state at its best evaluation (`restored_step`): the bench scores that model."""
    if monitor is None:
        monitor = ConvergenceMonitor(
            collect.patience,
            collect.tolerance,
            collect.smooth,
            collect.min_delta,
            gain_fraction=collect.gain_fraction,
        )
    keep_best = collect.restore_best or end_at_best
    best: tuple[int, dict[str, Any]] | None = None  # (step, trainer state) at the best
    restored_step = None
    history: list[dict[str, float]] = []
    checkpoints: list[dict[str, Any]] = []
    start = time.perf_counter()
    evaluating = [0.0]  # seconds spent inside `evaluate` so far

    def record() -> dict[str, float]:
        before = time.perf_counter()
        metrics = evaluate(trainer.generator)
        now = time.perf_counter()
        evaluating[0] += now - before
        history.append(
            {
                "step": trainer.steps,
                "seconds": now - start,
                "train_seconds": now - start - evaluating[0],
                **metrics,
            }
        )
        return metrics

    def finish(status: str, reason: str, converged_step: int | None) -> TrainingRun:
        return TrainingRun(
            status,
            reason,
            history,
            converged_step,
            checkpoints,
            time.perf_counter() - start,
            restored_step,
        )

    def evaluate_now() -> bool:
        """Evaluate; keep the state at a new best; True once the run is done."""
        nonlocal best, restored_step
        done = monitor.update(record()[metric])
        if keep_best and monitor.improved:
            best = (trainer.steps, trainer.state())
        if not done and collect.restore_best and monitor.drifted and best is not None:
            restored_step = best[0]
            trainer.restore(best[1])
            return True
        return done

    evaluate_now()
    converged_step = None
    while trainer.steps < collect.max_steps:
        losses = trainer.step()
        if not all(math.isfinite(v) for v in losses.values()):
            return finish("nan", f"non-finite loss at step {trainer.steps}: {losses}", None)
        if trainer.steps % collect.eval_every == 0 and evaluate_now():
            converged_step = trainer.steps
            break
    if end_at_best and best is not None and restored_step is None:
        restored_step = best[0]
        if best[0] != trainer.steps:
            trainer.restore(best[1])
    best = None  # the kept state is not needed past this point
    if converged_step is None:
        return finish(
            "not_converged",
            f"{metric} not converged after collect.max_steps={collect.max_steps} steps: "
            f"{monitor.reason()} (best {monitor.best:.4f})",
            None,
        )
    for _ in range(k_checkpoints):
        for _ in range(collect.checkpoint_every):
            losses = trainer.step()
            if not all(math.isfinite(v) for v in losses.values()):  # every step, not the last
                return finish(
                    "nan", f"non-finite loss at step {trainer.steps} after convergence", None
                )
        metrics = record()
        state = snapshot(trainer.generator) if snapshot else {}
        checkpoints.append({"step": trainer.steps, "metrics": metrics, "state": state})
    return finish("converged", "", converged_step)


# ---------------------------------------------------------------------------------------
# The base generator
# ---------------------------------------------------------------------------------------


@dataclass
class BaseGAN:
    """The base generator (+ its discriminator) every concept's LoRA starts from.

    Its folder is a base-model folder of the family "gan" (`wgen.models.base`; the protocol's
    implementation is `wgen.gan.base_model.GanBaseModel`)."""

    family = "gan"  # written to base.json; a folder written before families has none

    size: str
    generator: dict[str, torch.Tensor]
    discriminator: dict[str, torch.Tensor]
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)

    def build_generator(self) -> nn.Module:
        model = build_generator(self.size)
        model.load_state_dict(self.generator)
        return model

    def build_discriminator(self) -> nn.Module:
        model = build_discriminator(self.size)
        model.load_state_dict(self.discriminator)
        return model

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.generator, str(folder / "generator.safetensors"))
        save_file(self.discriminator, str(folder / "discriminator.safetensors"))
        write_json(
            folder / BASE_FILE,
            {
                "family": self.family,
                "size": self.size,
                "fingerprint": self.fingerprint,
                **self.info,
            },
        )

    @classmethod
    def load(cls, folder: Path) -> BaseGAN:
        folder = Path(folder)
        missing = [
            n
            for n in (BASE_FILE, "generator.safetensors", "discriminator.safetensors")
            if not (folder / n).exists()
        ]
        if missing:
            raise FileNotFoundError(
                f"base GAN folder {folder} lacks {missing}; make it with `wgen collect`"
            )
        meta = read_json(folder / BASE_FILE)
        meta.pop("family", None)  # "gan", or absent in a folder written before families
        base = cls(
            size=meta.pop("size"),
            generator=load_file(str(folder / "generator.safetensors")),
            discriminator=load_file(str(folder / "discriminator.safetensors")),
            fingerprint=meta.pop("fingerprint"),
            info=meta,
        )
        found = fingerprint(base.build_generator(), base.size)
        if found != base.fingerprint:
            raise ValueError(
                f"base generator in {folder} has fingerprint {found}, but base.json records "
                f"{base.fingerprint}: the weights were changed after they were saved"
            )
        return base


def train_base(gan: GANConfig, seed: int, pairs: list[ConceptPairs]) -> BaseGAN:
    """Train the whole generator on a mixture of training concepts for `gan.base_steps` steps
    (``seed``: `data.seed`, the run's).

    With no concept input it learns the average edit; LoRA then specialises it per concept.
    Runs on `current_device()` (the GPU of the Ray task `wgen.collect.stage` starts it in, if
    it has one); the models are built on the CPU first, so a seed gives the same init anywhere.
    """
    device = current_device()
    with torch_seed(seed):  # any unseeded draw inside, never the caller's RNG
        generator = build_generator(gan.size, seed=seed).to(device)
        discriminator = build_discriminator(gan.size, seed=seed + 1).to(device)
        trainer = Pix2PixTrainer(generator, discriminator, gan, gan.lr, pairs, seed)
        start = time.perf_counter()
        with torch_threads(gan.threads):  # the driver's default would oversubscribe
            for _ in range(gan.base_steps):
                losses = trainer.step()
        seconds = time.perf_counter() - start
    return BaseGAN(
        size=gan.size,
        generator=cpu_copy(generator.state_dict()),
        discriminator=cpu_copy(discriminator.state_dict()),
        fingerprint=fingerprint(generator, gan.size),
        info={
            "steps": gan.base_steps,
            "concepts": [p.concept_id for p in pairs],
            "seconds": round(seconds, 2),
            "device": str(device),
            "final_losses": losses if gan.base_steps else {},
        },
    )


# ---------------------------------------------------------------------------------------
# Per-concept runs
# ---------------------------------------------------------------------------------------


def lora_generator(
    base: BaseGAN, lora: LoRAConfig, init: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """The base generator with LoRA at the standard init (B = 0), or at `init` if given."""
    model = add_lora(base.build_generator(), lora, base.size)
    if init is not None:
        load_trainable_state_dict(model, init)
    return model


def weight_manifest(base: BaseGAN, lora: LoRAConfig) -> Manifest:
    """The layout of one concept's trained weights (LoRA A/B + norms per layer group)."""
    model = lora_generator(base, lora)
    return build_manifest(trainable_state_dict(model), Selection(), base.fingerprint)


def cpu_trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """`trainable_state_dict` as CPU tensors: a checkpoint taken on a GPU holds no GPU memory
    and flattens to NumPy like one taken on the CPU."""
    return cpu_copy(trainable_state_dict(model))


def train_lora(
    base: BaseGAN,
    config: Config,
    pairs: ConceptPairs,
    extractor: FeatureExtractor,
    init: dict[str, torch.Tensor] | None = None,
    k_checkpoints: int | None = None,
    seed: int | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    monitor: GrowingWindowMonitor | None = None,
) -> TrainingRun:
    """LoRA fine-tuning of one concept from the base (standard init unless `init` is given).

    `seed` defaults to the concept's own; `evaluate` to the full `Evaluator` (L1, PSNR, FD).
    A ``monitor`` (the bench's rule) replaces the collection's and ends the run at its best."""
    seed = concept_seed(config.data.seed, pairs.concept_id) if seed is None else seed
    k = config.collect.k_checkpoints if k_checkpoints is None else k_checkpoints
    if evaluate is None:
        evaluate = Evaluator(pairs.eval_sources, pairs.eval_targets, extractor)
    # The concept's seed drives every draw without a generator of its own (LoRA A when
    # lora.init_seed is None): the same concept trains identically in any actor or order.
    device = current_device()  # the actor's GPU on a cluster, else the CPU
    with torch_seed(seed):
        generator = lora_generator(base, config.lora, init).to(device)
        trainer = Pix2PixTrainer(
            generator,
            base.build_discriminator().to(device),
            config.gan,
            config.lora.lr,
            pairs,
            seed,
        )
        return train_until_converged(
            trainer,
            evaluate,
            config.collect,
            k,
            snapshot=cpu_trainable_state_dict,
            monitor=monitor,
            end_at_best=monitor is not None,
        )


def train_scratch(
    config: Config,
    pairs: ConceptPairs,
    extractor: FeatureExtractor,
    seed: int | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    init: str = "pix2pix",
    monitor: GrowingWindowMonitor | None = None,
) -> TrainingRun:
    """pix2pix: the whole generator and discriminator from a fresh init on one concept (the
    slow baseline); ``init`` is pix2pix's own or the identity-friendly one
    (`wgen.models.gan.GAN_INITS`). `seed`, `evaluate` and `monitor` as in `train_lora`."""
    seed = concept_seed(config.data.seed, pairs.concept_id) if seed is None else seed
    if evaluate is None:
        evaluate = Evaluator(pairs.eval_sources, pairs.eval_targets, extractor)
    device = current_device()
    with torch_seed(seed):
        generator = build_generator(config.gan.size, seed=seed, init=init).to(device)
        discriminator = build_discriminator(config.gan.size, seed=seed + 1, init=init).to(device)
        trainer = Pix2PixTrainer(generator, discriminator, config.gan, config.gan.lr, pairs, seed)
        return train_until_converged(
            trainer, evaluate, config.collect, monitor=monitor, end_at_best=monitor is not None
        )


def parameter_counts(base: BaseGAN, lora: LoRAConfig) -> dict[str, int]:
    """Full generator parameters vs trained LoRA (+ norm) parameters (paper: 7.06M → 0.22M)."""
    return count_parameters(lora_generator(base, lora))
