"""One distillation stage or round as a Ray Train run, through `wgen train`'s driver pieces.

Driver. `fit_round` builds the same block datasets as `wgen train` (`block_datasets` of the
teacher's weight data), the same scaling, failure, logging and checkpoint settings
(`wgen.generator.fit`), and runs a `TorchTrainer` whose worker is `distill_loop_per_worker`.

Worker. The frozen teacher is loaded from its generator folder; the student is a denoiser
with the w input (`build_denoiser(extra_cond=True)`), initialised from the teacher (stage 1:
all but the w embedding, whose last layer starts at zero, so the student starts as the
teacher at every w). Every epoch is one pass of the round's loss (`wgen.distill.targets`)
over the worker's block shard, then the same loss on the validation blocks with a fixed
seed; rank 0 reports a checkpoint that is a whole generator folder (the student, with the
teacher's codec, manifest, text encoder and base GAN), plus the optimizer and epoch, as
`wgen train` does, so a crashed worker or a re-submitted command resumes from it.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from wgen.config import Config
from wgen.core.runtime import (
    fit_interruptibly,
    print0,
    train_logging_config,
)
from wgen.diffusion import NoiseSchedule
from wgen.distill.targets import draw_w, progressive_loss, w_student_loss
from wgen.generator.checkpoint import WeightGenerator
from wgen.generator.dataset import TRAIN, VAL, BlockData, block_datasets
from wgen.generator.diffusion import block_cond, denoiser_schedule, guided_output
from wgen.generator.fit import (
    CHECKPOINTS_KEPT,
    TextTable,
    all_reduce_sum,
    load_optimizer,
    restore,
    save_checkpoint,
    scaling_config,
)
from wgen.models.denoiser import build_denoiser

# The run folder's layout of both targets (the generator's rounds, p-diff's under pdiff/)
DISTILL_DIR = "distill"  # <out>/distill/<round>/: one generator folder per round
ROUNDS_FILE = "rounds.json"  # each round's teacher, epochs, losses and wall time


@dataclass(frozen=True)
class Round:
    """One student: stage 1 (the w-student, ``progressive`` False) or a progressive round.

    Attributes:
        name: its folder under ``<out>/distill/``.
        steps: the DDIM steps it samples with (stage 1: `distill.start_steps`, as its
            teacher; a progressive round: half of its teacher's).
        progressive: False = stage 1 (matches the guided teacher at every t), True = stage 2.
    """

    name: str
    steps: int
    progressive: bool


def round_loss(
    round_: Round,
    student: torch.nn.Module,
    teacher: WeightGenerator,
    schedule: NoiseSchedule,
    batch: dict[str, torch.Tensor],
    text: torch.Tensor,
    config: Config,
    generator: torch.Generator,
) -> torch.Tensor:
    """The round's loss on one batch of blocks (``text``: each block's τ) at w drawn per
    block: the student reads w as its input; stage 1's teacher is guided at w, a progressive
    round's teacher runs as it samples (`WeightGenerator.guidance_input`)."""
    dist = config.distill
    x, mask, n = batch["x"][:, None, :], batch["mask"][:, None, :], batch["n"]
    w = draw_w(x.shape[0], dist.w_min, dist.w_max, generator).to(x.device)
    student_output = partial(student, **block_cond(n, text, w))
    if round_.progressive:
        teacher_output = guided_output(teacher.denoiser, n, text, w, teacher.guidance_input)
        return progressive_loss(
            student_output, teacher_output, schedule, round_.steps, x, mask, generator
        )
    guided_teacher = guided_output(teacher.denoiser, n, text, w, guidance_input=False)
    return w_student_loss(
        student_output, guided_teacher, schedule, x, mask, generator,
        single_step_t=config.generate.single_step_t, single_step_share=dist.single_step_share,
    )  # fmt: skip


def distill_epoch(
    round_: Round,
    student: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    teacher: WeightGenerator,
    schedule: NoiseSchedule,
    shard,
    texts: TextTable,
    config: Config,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """One pass of the round's loss over a block shard; with ``optimizer`` None the loss only
    (validation: each block reads its own concept's text). Sums over the workers."""
    training = optimizer is not None
    student.train(training)
    generator = torch.Generator().manual_seed(seed)
    loss_sum, batches, blocks = 0.0, 0, 0
    start = time.perf_counter()
    shuffle = config.train.shuffle_buffer if training else 0
    for batch in shard.iter_torch_batches(
        batch_size=batch_size,
        local_shuffle_buffer_size=shuffle or None,
        local_shuffle_seed=seed if shuffle else None,
    ):
        text = texts.draw(batch["concept"], generator) if training else texts.own(batch["concept"])
        with torch.set_grad_enabled(training):
            loss = round_loss(round_, student, teacher, schedule, batch, text, config, generator)
        if training:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss_sum, batches, blocks = loss_sum + loss.item(), batches + 1, blocks + len(batch["n"])
    seconds = time.perf_counter() - start
    loss_sum, batches, blocks = all_reduce_sum((loss_sum, batches, blocks))
    return {
        "loss": loss_sum / batches if batches else math.nan,
        "blocks": int(blocks),
        "s": seconds,
    }


def student_denoiser(teacher: WeightGenerator, config: Config, round_: Round):
    """The student: the teacher's denoiser with the w input; stage 1 starts from a teacher
    without one (the w embedding's last layer is zero: the student equals the teacher)."""
    student = build_denoiser(
        config.denoiser, teacher.text_dim, extra_cond=True, n_blocks=teacher.layout.n_blocks
    )
    missing, unexpected = student.load_state_dict(teacher.denoiser.state_dict(), strict=False)
    if unexpected or any(not key.startswith("extra_mlp.") for key in missing):
        raise ValueError(f"the teacher does not fit the student: {missing=} {unexpected=}")
    # Students always read their text: the null text gets no gradient, which DDP would wait for.
    student.null_text.requires_grad_(False)
    return student


def distill_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The Ray Train worker: see the module docstring. ``loop_config`` holds plain values only."""
    import ray.train
    import ray.train.torch

    config = Config.from_dict(loop_config["config"])  # the student's config
    dist = config.distill
    torch.set_num_threads(config.train.threads)
    data = BlockData.from_dict(loop_config["data"])
    round_ = Round(**loop_config["round"])
    rank = ray.train.get_context().get_world_rank()
    teacher = WeightGenerator.load(Path(loop_config["teacher"]))
    for p in teacher.denoiser.parameters():
        p.requires_grad_(False)
    student = student_denoiser(teacher, config, round_)
    state, restored, _ = restore(ray.train.get_checkpoint(), student)
    parallel = ray.train.torch.prepare_model(student)  # DDP with > 1 worker; moves to device
    device = next(student.parameters()).device
    teacher.denoiser.to(device)
    # No weight decay: a student that already matches its teacher must stay where it is.
    optimizer = torch.optim.AdamW(
        [p for p in student.parameters() if p.requires_grad], lr=dist.lr, weight_decay=0.0
    )
    if restored is not None:
        load_optimizer(optimizer, restored)
        shutil.rmtree(restored, ignore_errors=True)
    texts = TextTable(data, device)
    schedule = denoiser_schedule(config.denoiser)
    batch = dist.batch_size // config.train.workers
    train_shard = ray.train.get_dataset_shard(TRAIN)
    val_shard = ray.train.get_dataset_shard(VAL) if loop_config["has_val"] else None
    loop_start, first_epoch = time.perf_counter(), state.epoch + 1
    for epoch in range(first_epoch, dist.epochs + 1):
        seed = config.train.seed * 100_003 + epoch * 1_009 + rank
        args = (teacher, schedule)
        trained = distill_epoch(
            round_, parallel, optimizer, *args, train_shard, texts, config, batch, seed
        )
        metrics: dict[str, float] = {
            "epoch": epoch,
            "train_loss": trained["loss"],
            "blocks_per_s": trained["blocks"] / trained["s"],
            "epoch_s": trained["s"],
        }
        if val_shard is not None:
            with torch.no_grad():
                val = distill_epoch(
                    round_, student, None, *args, val_shard, texts, config, batch,
                    config.train.seed + rank,
                )  # fmt: skip
            metrics["val_loss"] = val["loss"]
        state.epoch = epoch
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                info = {"run_name": loop_config["run_name"], "distill": loop_config["record"]}
                generator = WeightGenerator(
                    config, student, teacher.codec, teacher.manifest, teacher.text_encoder,
                    teacher.text_dim, teacher.base, info=info,
                )  # fmt: skip
                state.history.append(metrics)
                generator.info.update(epoch=epoch, metrics=metrics, history=state.history)
                save_checkpoint(Path(tmp), generator, optimizer, state)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
                left = (time.perf_counter() - loop_start) / (epoch - first_epoch + 1)
                print0(
                    f"distill {round_.name}: epoch {epoch}/{dist.epochs} "
                    f"({left * (dist.epochs - epoch) / 60:.1f} min left) "
                    f"loss {metrics['train_loss']:.5f} · val {metrics.get('val_loss', math.nan):.5f}"
                    f" · {metrics['blocks_per_s']:,.0f} blocks/s"
                )
            ray.train.report(metrics, checkpoint=checkpoint)


def fit_round(
    config: Config,
    data: BlockData,
    round_: Round,
    teacher_dir: Path,
    name: str,
    storage_path: Path,
    record: dict[str, Any],
):
    """Run one round's TorchTrainer; returns Ray Train's Result. Run again with the same
    ``name`` and ``storage_path``, it resumes from the run's latest checkpoint."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    ray.data.DataContext.get_current().enable_progress_bars = False
    datasets = block_datasets(data)
    trainer = TorchTrainer(
        distill_loop_per_worker,
        train_loop_config={
            "config": config.to_dict(),
            "data": data.to_dict(),
            "round": asdict(round_),
            "teacher": str(Path(teacher_dir).resolve()),
            "run_name": name,
            "record": record,
            "has_val": VAL in datasets,
        },
        scaling_config=scaling_config(config.train),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()),
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            logging_config=train_logging_config(),
            checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        ),
        datasets=datasets,
    )
    return fit_interruptibly(trainer)
