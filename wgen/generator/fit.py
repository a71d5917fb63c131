"""Stage 4: fit the weight generator (the block denoiser) on Ray Train.

Driver. `fit_generator(config, out)` reads the weight dataset's layout, training-split
statistics and cached concept embeddings (`wgen.generator.dataset`), builds Ray Datasets of
blocks for the train and validation splits, and runs a data-parallel `TorchTrainer`
(Ray Train V2, the default in Ray 2.60). It is a plain function so that a Ray Tune trial
can call it (V2's Train + Tune pattern) with its own run name and storage path.
`run_train(config, out)` calls it and exports the final checkpoint to ``<out>/generator/``.

Worker. `train_loop_per_worker` rebuilds the Config from the plain dict it receives, takes
its shard of each dataset, wraps the denoiser with `prepare_model` (DDP for > 1 worker),
and every epoch reports train loss, validation denoising loss and throughput; rank 0
attaches a checkpoint (a whole generator folder, `wgen.generator.checkpoint`, plus the optimizer
state) and, every `train.quality_every` epochs and at the last one, the b-independent
quality score: the base model with generated weights on the validation concepts' held-back
data (`BaseModel.quality`; for the GAN, its paired metrics with the generated LoRA). The
base model is whichever family the run folder's base holds (`wgen.models.base`).

Resuming. A worker that dies is replaced by Ray Train (`FailureConfig.max_failures`) and the
new worker group restarts the loop from the latest reported checkpoint
(`ray.train.get_checkpoint()`): model, optimizer and epoch. A job submitted again with the
same run folder uses the same run name (`run_name`: a digest of the settings that define
the model, not of the epoch count or the number of workers) and storage path, and Ray Train
V2 restores that run's latest checkpoint, so it continues instead of starting over.

A run folder at a URI (`wgen.core.storage`): Ray Train keeps the run there itself
(``storage_path`` inside the URI's filesystem, passed as ``storage_filesystem``), and a worker
on a node without the driver's staging copy fetches the base model and the pairs it reads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from wgen.config import Config, GenerateConfig, TrainConfig
from wgen.core.integrity import stage_files
from wgen.core.runfolder import fingerprint, stage_record, without_later_fields_off
from wgen.core.runtime import (
    SUCCESS_FILE,
    atomic_dir,
    fit_interruptibly,
    init_ray,
    print0,
    read_json,
    train_logging_config,
    write_json,
)
from wgen.core.storage import RunStorage
from wgen.generator.checkpoint import DENOISER_FILE, INFO_FILE, WeightGenerator
from wgen.generator.dataset import (
    CONCEPT_DATASET,
    TRAIN,
    VAL,
    BlockData,
    block_datasets,
    concept_dataset,
    concept_rows,
    load_block_data,
)
from wgen.generator.diffusion import WeightDiffusion
from wgen.generator.funcspace import FunctionSpaceLoss
from wgen.generator.schedule import epoch_lr, improves
from wgen.models.base import BASE_DIR, BaseModel, load_base_model
from wgen.models.denoiser import Denoiser, build_denoiser
from wgen.weights.format import WeightFormatError, check_compatible
from wgen.weights.store import WeightStore

GENERATOR_DIR = "generator"  # <out>/generator: the exported final generator
RAY_RESULTS_DIR = "ray_results"  # <out>/ray_results/<run name>: Ray Train's storage
PROGRESS_DIR = "progress"  # <storage>/<run name>/progress/rank<r>.jsonl: who trained what
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_META_FILE = "optimizer.json"
TRAIN_STATE_FILE = "train_state.json"
BEST_DENOISER_FILE = "best_denoiser.safetensors"  # the best-probed epoch's weights (export=best)
CHECKPOINTS_KEPT = 2  # the latest is what a resume needs; one more in case it is incomplete


# ---------------------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------------------


def run_name(config: Config) -> str:
    """The Ray Train run name: the same model settings give the same name, so a job
    re-submitted on the same run folder resumes its run. Epochs, workers, learning rate
    and evaluation cadence are left out: changing them continues the same model."""
    model = {
        # (a field added later is left out while off: older runs keep their name)
        "denoiser": without_later_fields_off({"denoiser": dataclasses.asdict(config.denoiser)})[
            "denoiser"
        ],
        "text_encoder": config.train.text_encoder,
        "lora": dataclasses.asdict(config.lora),
        "gan_size": config.gan.size,
        # What the model is trained on and for (not how fast): other values, other model.
        "objective": {
            "paraphrases": config.train.paraphrases,
            "func_weight": config.train.func_weight,
            "func_t": config.train.func_t,
            "single_step_t": config.generate.single_step_t,
        },
        "seed": config.train.seed,  # another seed is another model, not a resume
    }
    if config.train.max_train_concepts is not None:  # (left out while off: older runs' names)
        model["max_train_concepts"] = config.train.max_train_concepts
    return f"generator-{fingerprint(model, length=10)}"


def per_worker_batch(train: TrainConfig) -> int:
    """The global batch split over the workers; it must divide exactly (docs/architecture.md,
    rule 6)."""
    if not train.block_pass and train.concept_passes < 1:
        raise ValueError(
            "train.block_pass=false with train.concept_passes=0 trains nothing; "
            "turn the block pass on or set concept_passes >= 1"
        )
    if train.workers < 1:
        raise ValueError(f"train.workers must be >= 1, got {train.workers}")
    if train.batch_size % train.workers:
        raise ValueError(
            f"train.batch_size={train.batch_size} (global, in blocks) does not divide by "
            f"train.workers={train.workers}; pick a multiple of {train.workers}"
        )
    return train.batch_size // train.workers


def quality_due(epoch: int, train: TrainConfig) -> bool:
    """Score the base model's quality every `quality_every` epochs (0 = never early) and at
    the last one."""
    return epoch == train.epochs or (train.quality_every > 0 and epoch % train.quality_every == 0)


def torch_world_size() -> int:
    """Workers in the process group; 1 outside Ray Train (or with no process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def all_reduce_sum(values: Iterable[float]) -> list[float]:
    """Sum scalars over the Ray Train workers; one process (or no process group) is a no-op."""
    tensor = torch.tensor(list(values), dtype=torch.float64)
    if torch_world_size() > 1:
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


# ---------------------------------------------------------------------------------------
# Optimizer state in safetensors (no pickle, architecture rule 7)
# ---------------------------------------------------------------------------------------


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Tensors of the state to safetensors (keys "<param index>.<name>"), the rest to JSON."""
    state = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.detach().cpu().contiguous()
        for index, values in state["state"].items()
        for name, value in values.items()
    }
    save_file(tensors, str(Path(folder) / OPTIMIZER_FILE))
    write_json(Path(folder) / OPTIMIZER_META_FILE, {"param_groups": state["param_groups"]})


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Inverse of `save_optimizer`; torch moves the state to the parameters' device."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(Path(folder) / OPTIMIZER_FILE)).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    param_groups = read_json(Path(folder) / OPTIMIZER_META_FILE)["param_groups"]
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


# ---------------------------------------------------------------------------------------
# The worker side
# ---------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """What a checkpoint records besides the weights: epochs done and their metrics, and
    the epoch whose probe score was the best so far (its weights: `BEST_DENOISER_FILE`)."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float | None = None


def restore(checkpoint, model: Denoiser) -> tuple[TrainState, Path | None, dict | None]:
    """Load the denoiser from a Ray Train checkpoint; returns its TrainState, a local copy
    of the folder (for the optimizer, loaded once the model is on its device) and the best
    epoch's weights if the checkpoint has them."""
    if checkpoint is None:
        return TrainState(), None, None
    local = Path(tempfile.mkdtemp(prefix="wgen-restore-"))
    checkpoint.to_directory(str(local))
    model.load_state_dict(load_file(str(local / DENOISER_FILE)))
    best = local / BEST_DENOISER_FILE
    best_weights = load_file(str(best)) if best.exists() else None
    return TrainState(**read_json(local / TRAIN_STATE_FILE)), local, best_weights


class ProgressLog:
    """One JSON line per event (start, epoch) with the process id, per rank; a start also
    names the Ray node.

    Why: after a failure, this is where an operator (and the fault-tolerance tests) sees
    which process, on which node, trained which epoch and from which checkpoint a new
    worker resumed.
    """

    def __init__(self, folder: Path, rank: int) -> None:
        self.path = Path(folder) / f"rank{rank}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **values: Any) -> None:
        record = {"event": event, "pid": os.getpid(), "time": time.time(), **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_progress(folder: Path, rank: int = 0) -> list[dict[str, Any]]:
    path = Path(folder) / f"rank{rank}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class TextTable:
    """Every wording's τ on the worker's device, and one wording drawn per concept.

    Wording c < C is concept c's own text (validation and the quality probe read those);
    a training step draws one of a training concept's P + 1 wordings (paraphrase
    augmentation), uniformly, from the step's seeded generator.
    """

    def __init__(self, data: BlockData, device: torch.device) -> None:
        # np.require: arrays from Ray's object store are read-only, which torch warns about
        self.states = torch.as_tensor(np.require(data.text_states, requirements="W"), device=device)
        self.wordings = torch.as_tensor(np.require(data.wordings, requirements="W"))
        self.counts = torch.as_tensor(np.require(data.n_wordings, requirements="W"))

    def own(self, concepts: torch.Tensor) -> torch.Tensor:
        return self.states[concepts.to(self.states.device)]

    def draw_ids(self, concepts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        concepts = concepts.cpu()
        pick = (torch.rand(len(concepts), generator=generator) * self.counts[concepts]).long()
        return self.wordings[concepts, pick]

    def draw(self, concepts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.states[self.draw_ids(concepts, generator).to(self.states.device)]


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    diffusion: WeightDiffusion,
    shard,
    texts: TextTable,
    batch_size: int,
    shuffle_buffer: int,
    seed: int,
) -> dict[str, float]:
    """One pass of the diffusion loss over this worker's block shard; loss and throughput
    summed over all workers. Each block reads one wording of its concept's text."""
    model.train()
    generator = torch.Generator().manual_seed(seed)
    loss_sum, batches, blocks, waited = 0.0, 0, 0, 0.0
    start = time.perf_counter()
    batches_iter = iter(
        shard.iter_torch_batches(
            batch_size=batch_size,
            local_shuffle_buffer_size=shuffle_buffer or None,
            local_shuffle_seed=seed if shuffle_buffer else None,
        )
    )
    while True:
        wait_start = time.perf_counter()
        batch = next(batches_iter, None)
        waited += time.perf_counter() - wait_start
        if batch is None:
            break
        x, mask = batch["x"][:, None, :], batch["mask"][:, None, :]
        text = texts.draw(batch["concept"], generator)
        loss = diffusion.training_loss(model, x, mask, batch["n"], text, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum, batches, blocks = loss_sum + loss.item(), batches + 1, blocks + x.shape[0]
    seconds = time.perf_counter() - start
    loss_sum, batches, blocks, waited_all = all_reduce_sum((loss_sum, batches, blocks, waited))
    return {
        "train_loss": loss_sum / max(batches, 1),
        "blocks": int(blocks),
        "epoch_s": seconds,
        "blocks_per_s": blocks / seconds,
        "data_wait_s": waited_all / max(1, torch_world_size()),
    }


def func_timesteps(train: TrainConfig, generate: GenerateConfig) -> tuple[int, int]:
    """[lo, hi] of the timesteps the function-space term is applied at (`train.func_t`; None:
    the single generation step's, `generate.single_step_t`)."""
    if train.func_t is None:
        return generate.single_step_t, generate.single_step_t
    lo, hi = train.func_t
    return lo, hi


def concept_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    diffusion: WeightDiffusion,
    func_loss: FunctionSpaceLoss | None,
    shard,
    texts: TextTable,
    block_mask: torch.Tensor,
    concepts_per_step: int,
    timesteps: tuple[int, int],
    weight: float,
    seed: int,
) -> dict[str, float]:
    """One pass of whole-concept steps over this worker's training concepts:
    L = L_diff + λ_f·L_func per step (λ_f = ``weight``; ``func_loss`` None or λ_f = 0: L_diff).

    Each step takes a few concepts and draws one wording of each. L_diff: the diffusion loss
    on all N blocks of one of the concept's K checkpoints, at random t. L_func: ALL N blocks
    denoised from pure noise at a t in ``timesteps`` — exactly what single-step generation
    does — decoded and scored through the frozen base model on the concept's training data.
    The blocks of all the step's concepts share each forward (each block reads its
    concept's text row), so DDP sees one backward per step.
    """
    model.train()
    generator = torch.Generator().manual_seed(seed)
    device = texts.states.device
    use_func = func_loss is not None and weight > 0
    diff_sum, func_sum, steps = 0.0, 0.0, 0
    start = time.perf_counter()
    for batch in shard.iter_batches(batch_size=concepts_per_step, batch_format="numpy"):
        # One concept per step: a zero-copy, read-only view of the object store (torch warns)
        concepts = torch.as_tensor(np.require(batch["concept"], requirements="W"))
        count, k, n_blocks, block_size = batch["blocks"].shape
        text = texts.states[texts.draw_ids(concepts, generator).to(device)]
        rows = torch.arange(count, device=device).repeat_interleave(n_blocks)
        n = torch.arange(n_blocks, device=device).repeat(count)
        pick = torch.randint(k, (count,), generator=generator)
        x0 = torch.as_tensor(batch["blocks"][np.arange(count), pick.numpy()]).to(device)
        x0 = x0.reshape(count * n_blocks, 1, block_size)
        mask = block_mask.repeat(count, 1)[:, None, :]
        loss = diffusion.training_loss(
            model, x0, mask, n, text, generator=generator, text_rows=rows
        )
        diff_sum += loss.item()
        if use_func:
            t = torch.randint(timesteps[0], timesteps[1] + 1, (count,), generator=generator)
            t = t.repeat_interleave(n_blocks).to(device)
            x_t = torch.randn(count * n_blocks, 1, block_size, generator=generator).to(device)
            output = model(x_t, t, n, text, text_rows=rows)
            estimate = diffusion.predict_x0(output, x_t, t).reshape(count, n_blocks, 1, block_size)
            func = torch.stack(
                [
                    func_loss(
                        estimate[c],
                        *func_loss.base.tensors(batch["inputs"][c], batch["targets"][c], device),
                    )
                    for c in range(count)
                ]
            ).mean()
            loss = loss + weight * func
            func_sum += func.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    diff_sum, func_sum, steps = all_reduce_sum((diff_sum, func_sum, steps))
    metrics = {
        "concept_diff_loss": diff_sum / max(steps, 1),
        "concept_s": time.perf_counter() - start,
    }
    if use_func:
        metrics["func_loss"] = func_sum / max(steps, 1)
    return metrics


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module,
    diffusion: WeightDiffusion,
    shard,
    texts: TextTable,
    batch_size: int,
    seed: int,
) -> float:
    """The denoising loss on the validation concepts' blocks, averaged over real values.

    The same seed every epoch draws the same t and ε for the same block order, so epochs
    compare on equal terms.
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0.0
    for batch in shard.iter_torch_batches(batch_size=batch_size):
        x, mask = batch["x"][:, None, :], batch["mask"][:, None, :]
        text = texts.own(batch["concept"])
        loss = diffusion.training_loss(
            model, x, mask, batch["n"], text, cond_drop_prob=0.0, generator=generator
        )
        real = float(mask.sum())
        total, count = total + loss.item() * real, count + real
    total, count = all_reduce_sum((total, count))
    return total / count if count else math.nan


class QualityProbe:
    """Rank 0's b-independent score: the base model's quality (`BaseModel.quality`) with
    weights generated (1 step) for each validation concept, on its held-back data; the mean
    over concepts of each metric is reported as ``quality_<metric>``.

    With the text sensitivity beside it: the family's `quality_key` when each concept is
    generated from ANOTHER validation concept's text (shuffled: the texts rolled by one) and
    from the null text. A generator that reads its text scores clearly worse with both; one
    that ignores it (the diffusion-only generator did) scores the same.
    """

    def __init__(self, out: Path, data: BlockData, base: BaseModel) -> None:
        val = data.concepts_of(VAL)
        self.tasks = base.task_data(out, list(val["concept_id"]))
        index = data.concept_index
        self.embeddings = [data.embeddings[index[t.concept_id]] for t in self.tasks]
        self.base = base
        # the probe score `train.export=best` minimises (and Ray Tune's default metric)
        self.selection_metric = f"quality_{base.quality_key}"

    def _mean(self, generator: WeightGenerator, embeddings: list) -> dict[str, float]:
        scores = [
            self.base.quality(generator.generate_from_embedding(emb, steps=1), task)
            for task, emb in zip(self.tasks, embeddings, strict=True)
        ]
        return {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}

    def __call__(self, generator: WeightGenerator) -> dict[str, float]:
        if not self.tasks:
            return {}
        key = self.base.quality_key
        metrics = {f"quality_{k}": v for k, v in self._mean(generator, self.embeddings).items()}
        if len(self.tasks) > 1:
            shuffled = self.embeddings[1:] + self.embeddings[:1]
            metrics[f"quality_{key}_shuffled"] = self._mean(generator, shuffled)[key]
        null = [np.zeros_like(e) for e in self.embeddings]  # zeros = the null condition
        metrics[f"quality_{key}_null"] = self._mean(generator, null)[key]
        return metrics


def save_checkpoint(
    folder: Path,
    generator: WeightGenerator,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    best_weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """A generator folder that rebuilds itself, plus the optimizer, the epoch to resume and
    the best-probed epoch's weights (small next to the rest: the denoiser alone)."""
    generator.save(folder)
    save_optimizer(optimizer, folder)
    write_json(folder / TRAIN_STATE_FILE, dataclasses.asdict(state))
    if best_weights is not None:
        save_file(
            {k: v.contiguous() for k, v in best_weights.items()}, str(folder / BEST_DENOISER_FILE)
        )


def _format_metrics(
    metrics: dict[str, float], epochs: int, eta_s: float | None = None, quality_key: str = "l1"
) -> str:
    text = f"train: epoch {metrics['epoch']}/{epochs}"
    if eta_s is not None:
        text += f" ({eta_s / 60:.1f} min left)"
    if "train_loss" in metrics:
        text += f" loss {metrics['train_loss']:.4f} · {metrics['blocks_per_s']:,.0f} blocks/s"
    if "concept_diff_loss" in metrics:
        text += f" · whole concepts: diffusion {metrics['concept_diff_loss']:.4f}"
    text += f" · val {metrics['val_loss']:.4f}"
    if "func_loss" in metrics:
        text += f" func {metrics['func_loss']:.4f}"
    quality = f"quality_{quality_key}"
    if quality in metrics:
        text += f" · base with generated weights: {quality_key} {metrics[quality]:.4f}"
    if f"{quality}_shuffled" in metrics:
        text += f" (another concept's text {metrics[f'{quality}_shuffled']:.4f}"
        text += f", null text {metrics[f'{quality}_null']:.4f})"
    return text


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The Ray Train worker: see the module docstring. ``loop_config`` holds plain values only."""
    import ray.train
    import ray.train.torch

    config = Config.from_dict(loop_config["config"])
    train = config.train
    torch.set_num_threads(train.threads)
    data = BlockData.from_dict(loop_config["data"])
    rank = ray.train.get_context().get_world_rank()
    out = Path(loop_config["out"])
    RunStorage(out, loop_config.get("uri")).fetch_missing([BASE_DIR, "pairs", "concepts.jsonl"])

    with torch.random.fork_rng():  # every rank builds the same initial weights
        torch.manual_seed(train.seed)
        model = build_denoiser(config.denoiser, data.text_dim, n_blocks=data.layout.n_blocks)
    if config.denoiser.cond_drop == 0.0:
        # Never dropped, the null text gets no gradient, which DDP would wait for forever.
        model.null_text.requires_grad_(False)
    state, restored, best_weights = restore(ray.train.get_checkpoint(), model)
    progress = ProgressLog(Path(loop_config["progress_dir"]), rank)
    progress.write(
        "start", resumed_epoch=state.epoch, node_id=ray.get_runtime_context().get_node_id()
    )
    parallel = ray.train.torch.prepare_model(model)  # DDP with > 1 worker; moves to device
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=train.lr,
        weight_decay=train.weight_decay,
    )
    if restored is not None:
        load_optimizer(optimizer, restored)
        shutil.rmtree(restored, ignore_errors=True)

    device = next(model.parameters()).device
    texts = TextTable(data, device)
    diffusion = WeightDiffusion(config.denoiser)
    batch = per_worker_batch(train)
    use_func = train.func_weight > 0 and train.concept_passes > 0
    # The frozen base model comes from the run folder (shared storage on a cluster), like the
    # weights; every rank needs it for the function-space term, rank 0 for the probe.
    base = load_base_model(out / BASE_DIR, config) if rank == 0 or use_func else None
    probe = QualityProbe(out, data, base) if rank == 0 else None
    func_loss = FunctionSpaceLoss(base, data.codec, data.manifest) if use_func else None
    train_shard = ray.train.get_dataset_shard(TRAIN) if train.block_pass else None
    val_shard = ray.train.get_dataset_shard(VAL) if loop_config["has_val"] else None
    concept_shard = (
        ray.train.get_dataset_shard(CONCEPT_DATASET) if train.concept_passes > 0 else None
    )
    concepts_per_step = max(1, train.func_concepts // train.workers)
    block_mask = torch.as_tensor(data.layout.mask(), device=device)

    first_epoch, loop_start = state.epoch + 1, time.perf_counter()
    for epoch in range(first_epoch, train.epochs + 1):
        seed = train.seed * 100_003 + epoch * 1_009 + rank
        lr = epoch_lr(train.lr, train.lr_schedule, epoch, train.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        metrics: dict[str, float] = {"epoch": epoch, "lr": lr}
        if train.block_pass:
            metrics.update(
                train_epoch(
                    parallel, optimizer, diffusion, train_shard, texts, batch,
                    train.shuffle_buffer, seed,
                )
            )  # fmt: skip
        for repeat in range(train.concept_passes):
            metrics.update(
                concept_epoch(
                    parallel, optimizer, diffusion, func_loss, concept_shard, texts,
                    block_mask, concepts_per_step, func_timesteps(train, config.generate),
                    train.func_weight, seed + 7 + 131 * repeat,
                )
            )  # fmt: skip
        metrics["val_loss"] = (
            validation_loss(model, diffusion, val_shard, texts, batch, train.seed + rank)
            if val_shard is not None
            else math.nan
        )
        state.epoch = epoch
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                generator = WeightGenerator(
                    config, model, data.codec, data.manifest, data.text_encoder,
                    data.text_dim, base, info={"run_name": loop_config["run_name"]},
                )  # fmt: skip
                if quality_due(epoch, train):
                    metrics.update(probe(generator))
                    if improves(metrics.get(probe.selection_metric), state.best_score):
                        state.best_epoch, state.best_score = epoch, metrics[probe.selection_metric]
                        best_weights = {
                            k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                        }
                state.history.append(metrics)
                generator.info.update(epoch=epoch, metrics=metrics, history=state.history)
                save_checkpoint(Path(tmp), generator, optimizer, state, best_weights)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
                # ETA from this run's own epochs (resumed ones took unknown time)
                per_epoch = (time.perf_counter() - loop_start) / (epoch - first_epoch + 1)
                eta = per_epoch * (train.epochs - epoch)
                print0(_format_metrics(metrics, train.epochs, eta, base.quality_key))
            ray.train.report(metrics, checkpoint=checkpoint)
        progress.write("epoch", epoch=epoch)


# ---------------------------------------------------------------------------------------
# The driver side
# ---------------------------------------------------------------------------------------


def check_weights_fit_config(out: Path, config: Config, data: BlockData) -> BaseModel:
    """The config must describe the weights that were collected: the same base model and
    the same parameter selection (`BaseModel.manifest`, from the config sections its family
    reads, e.g. the GAN's `lora`). Returns the base model."""
    base = load_base_model(Path(out) / BASE_DIR, config)
    check_compatible(data.manifest, base.fingerprint)
    if base.manifest().to_json() != data.manifest.to_json():
        raise WeightFormatError(
            f"the weights under {Path(out) / 'weights'} were collected with another "
            f"parameter selection of the {base.family} base model than this config gives; "
            "train with the preset and --set values of `wgen collect`"
        )
    return base


def scaling_config(train: TrainConfig):
    """Ray Train's workers: how many, and what each asks for (its CPUs, a GPU if asked, and
    any custom resources that pin training to some nodes)."""
    from ray.train import ScalingConfig

    return ScalingConfig(
        num_workers=train.workers,
        use_gpu=train.use_gpu,
        resources_per_worker={"CPU": train.cpus_per_worker, **train.worker_resources},
    )


def fit_generator(
    config: Config,
    out: Path,
    name: str | None = None,
    storage_path: Path | None = None,
    callbacks: list | None = None,
    storage: RunStorage | None = None,
):
    """Run the data-parallel TorchTrainer on ``<out>/weights``; returns Ray Train's Result.

    ``name`` / ``storage_path`` default to `run_name(config)` and ``<out>/ray_results``; a Ray
    Tune trial passes its own (and e.g. Tune's report callback in ``callbacks``). Running
    again with the same name and storage path resumes from that run's latest checkpoint.
    ``storage``: the run folder at a URI (``out`` is its staging copy); ``ray_results`` is
    then at the URI.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    out = Path(out).resolve()
    train = config.train
    per_worker_batch(train)  # fail before anything starts
    start = time.perf_counter()
    data = load_block_data(
        out,
        config.denoiser.block_size,
        train.text_encoder,
        config.denoiser.center,
        text_view=config.denoiser.text,
        n_paraphrases=train.paraphrases,
        seed=config.data.seed,
        max_train_concepts=train.max_train_concepts,
    )
    base = check_weights_fit_config(out, config, data)
    name = name or run_name(config)
    filesystem = None
    if storage is not None and storage.remote and storage_path is None:
        storage_uri, filesystem = storage.target(RAY_RESULTS_DIR)
        # The per-rank progress lines stay on each worker's host (they are only logs).
        progress_dir = out / RAY_RESULTS_DIR / name / PROGRESS_DIR
        where = f"{storage}/{RAY_RESULTS_DIR}"
    else:
        storage_uri = str(Path(storage_path or out / RAY_RESULTS_DIR).resolve())
        progress_dir = Path(storage_uri) / name / PROGRESS_DIR
        where = storage_uri
    ray.data.DataContext.get_current().enable_progress_bars = False  # one line per epoch instead
    datasets = block_datasets(data)
    if not train.block_pass:
        del datasets[TRAIN]  # whole-concept steps only: the block samples are not read
    if train.concept_passes > 0:
        datasets[CONCEPT_DATASET] = concept_dataset(concept_rows(out, data, base, train.func_pairs))
    print0(
        f"train: {data.rows.get(TRAIN, 0)} training checkpoints → {data.blocks(TRAIN):,} blocks "
        f"of b={data.layout.block_size} (N={data.layout.n_blocks} per checkpoint), "
        f"{data.rows.get(VAL, 0)} validation checkpoints, cut in {time.perf_counter() - start:.1f} s; "
        f"{train.workers} worker(s), run {name} in {where}"
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config.to_dict(),
            "data": data.to_dict(),
            "out": str(out),
            "uri": storage.uri if storage is not None else None,
            "run_name": name,
            "progress_dir": str(progress_dir),
            "has_val": VAL in datasets,
        },
        scaling_config=scaling_config(train),
        run_config=RunConfig(
            name=name,
            storage_path=storage_uri,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=train.max_failures),
            logging_config=train_logging_config(),
            checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            callbacks=callbacks,
        ),
        datasets=datasets,
    )
    return fit_interruptibly(trainer)


def generator_complete(folder: Path, name: str, epochs: int) -> bool:
    """An exported generator of this run that has trained all the asked epochs."""
    path = Path(folder) / INFO_FILE
    if not path.exists():
        return False
    info = read_json(path).get("info", {})
    trained = info.get("epochs_trained", info.get("epoch", 0))
    return info.get("run_name") == name and trained >= epochs


def export_generator(checkpoint, folder: Path, export: str = "last") -> WeightGenerator:
    """Copy the generator of a Ray Train checkpoint to ``folder`` atomically (rebuilding it
    on the way, so a broken checkpoint fails here rather than at generation time).

    ``export="best"`` writes the best-probed epoch's weights instead of the last ones (the
    last where no epoch was probed); ``info["epoch"]`` says which epoch was written and
    ``info["epochs_trained"]`` how far the run got.
    """
    with checkpoint.as_directory() as source:
        generator = WeightGenerator.load(Path(source))
        state = TrainState(**read_json(Path(source) / TRAIN_STATE_FILE))
        best = Path(source) / BEST_DENOISER_FILE
        generator.info.update(epochs_trained=state.epoch, exported="last")
        if export == "best" and state.best_epoch:
            if state.best_epoch != state.epoch:
                generator.denoiser.load_state_dict(load_file(str(best)))
            metrics = next(m for m in state.history if m["epoch"] == state.best_epoch)
            generator.info.update(epoch=state.best_epoch, metrics=metrics, exported="best")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder) as tmp:
        generator.save(tmp)
    return generator


def train_stage(
    config: Config, out: Path, force: bool = False, storage: RunStorage | None = None
) -> dict[str, Any]:
    """`wgen train`'s entry (`wgen.core.stages`): `run_train`, then the generator folder's
    record, written last."""
    info = run_train(config, out, force=force, storage=storage)
    write_json(
        Path(out) / GENERATOR_DIR / SUCCESS_FILE,
        {
            "record": stage_record(config, "train"),
            "epochs": config.train.epochs,
            "files": stage_files(out, "train"),
        },
    )
    return info


def can_skip(done: dict[str, Any], config: Config, out: Path, retry: bool) -> bool:
    """A finished generator with the same record is skipped unless more epochs are asked for."""
    return done.get("epochs", 0) >= config.train.epochs


def run_train(
    config: Config, out: Path, force: bool = False, storage: RunStorage | None = None
) -> dict[str, Any]:
    """Fit the generator on ``<out>/weights`` and export it to ``<out>/generator``.

    A finished generator of the same run is kept unless ``force``; an unfinished run (a
    crashed or re-submitted job, or more epochs asked for) resumes from its checkpoint.
    ``storage``: the run folder at a URI, whose staging copy ``out`` is.
    """
    out = Path(out)
    storage = storage or RunStorage(out)
    store = WeightStore(out)
    store.manifest()  # a missing weight dataset fails here, naming `wgen collect`
    name = run_name(config)
    target = out / GENERATOR_DIR
    if force:
        shutil.rmtree(out / RAY_RESULTS_DIR / name, ignore_errors=True)
        storage.remove(f"{RAY_RESULTS_DIR}/{name}")
    elif generator_complete(target, name, config.train.epochs):
        info = read_json(target / INFO_FILE)["info"]
        print0(
            f"train: {target} is complete ({info.get('epochs_trained', info['epoch'])} epochs "
            f"of run {name}); "
            "skipping (use --force to retrain)"
        )
        return info
    init_ray()
    start = time.perf_counter()
    result = fit_generator(config, out, storage=storage)
    if result.checkpoint is None:
        raise RuntimeError(f"run {name} reported no checkpoint; see {storage}/{RAY_RESULTS_DIR}")
    generator = export_generator(result.checkpoint, target, config.train.export)
    info = {**generator.info, "job_seconds": round(time.perf_counter() - start, 2)}
    chosen = (
        f"the best-probed epoch {info['epoch']} of {info['epochs_trained']}"
        if info["exported"] == "best"
        else f"epoch {info['epoch']}"
    )
    print0(f"train: generator of {chosen} → {target} ({info['job_seconds']:.1f} s this job)")
    return info
