"""Build a classifier-norm zoo: a run folder that `wgen train` reads.

Steps (`build_zoo`):

1. plan the concepts (class subsets, `wgen.normzoo.concepts`) and write ``concepts.jsonl``;
2. train the base ConvNet-3 on every class of the digits' training split, briefly
   (`NormZooConfig.base_epochs`): a base that knows the digits only roughly, so that what a
   concept's norm layers add is visible in its error; save it to ``base/``;
3. fine-tune, for every train and val concept, only the norm layers on the images of its
   classes (BatchNorm statistics frozen), starting from the base's values, and keep K
   checkpoints `checkpoint_every` steps apart after the first `steps` steps: one Ray task per
   concept, which writes ``weights/<concept id>.parquet`` and then its status (as `wgen
   collect` does); held-out concepts are never trained;
4. write ``weights/_SUCCESS.json`` listing every file (`wgen.core.integrity`), last.

A re-run trains only the concepts without a status, so an interrupted build resumes; one
with other settings than the base folder records is refused.

What ``<out>`` then holds, in the layout `wgen collect` writes for the GAN::

    concepts.jsonl           one concept per line (`wgen.normzoo.concepts`)
    base/base.json           "family": "classifier-norm", fingerprint, architecture, split,
                             and this config (under "info")
    base/classifier.safetensors
    weights/_manifest.json   the norm layers' groups and the base fingerprint
    weights/cNNNN.parquet    K rows per concept: ids, text, split, step, error, accuracy,
                             one list<float32> column per norm layer (g000, g001, g002)
    weights/_status/cNNNN.json
    weights/_SUCCESS.json    the files and their sha256, the zoo's settings; no ``record``:
                             no `wgen collect` setting shaped these weights, so `wgen train`
                             takes any preset on them
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wgen.core.errors import ConfigError, RunFolderError
from wgen.core.integrity import stage_files
from wgen.core.runtime import SUCCESS_FILE, init_ray, print0, torch_threads, write_json
from wgen.models.base import BASE_DIR, BASE_FILE, TaskData
from wgen.models.classifiers import build_classifier
from wgen.normzoo.base_model import NormClassifierBaseModel, digits
from wgen.normzoo.concepts import CONCEPTS_FILE, SubsetConcept, load_concepts, plan_concepts
from wgen.normzoo.concepts import save_concepts as write_concepts
from wgen.pdiff.zoo import accuracies, derived_seed, train_epochs
from wgen.weights.format import flatten
from wgen.weights.store import WeightStore

METRICS = ("error", "accuracy")  # stored per checkpoint in the weight rows
_ZOO_KEY = 3  # mixed into every seed (p-diff's settings use 1 and 2), so no seed is shared


@dataclass
class NormZooConfig:
    """How a classifier-norm zoo is built. The defaults build one in about a minute on 2
    cores (68 concepts, 64 of them fine-tuned, 3 checkpoints each): with 60 training concepts
    the tiny generator reads its text (docs/architecture.md, "A second family")."""

    seed: int = 0  # seeds the digits' split, the base, the concept plan and every fine-tuning
    heldout_fraction: float = 0.3  # share of the digits held back: only ever scored
    width: int = 8  # channels of the ConvNet-3's first conv (then 2x, 2x)
    base_epochs: int = 2  # epochs of whole-network training of the base on all ten classes
    base_lr: float = 3e-3  # Adam learning rate of the base
    batch_size: int = 64  # images per training step (base and fine-tuning)
    classes_per_concept: int = 3  # k: a concept is a subset of k of the ten classes
    train_concepts: int = 60  # concepts the generator trains on (of C(10, 3) = 120 subsets)
    val_concepts: int = 4  # concepts collected for validation (the quality probe's)
    heldout_concepts: int = 4  # concepts named in concepts.jsonl, never trained on
    steps: int = 40  # fine-tuning steps before the first checkpoint
    k_checkpoints: int = 3  # K checkpoints kept per concept
    checkpoint_every: int = 5  # steps between two checkpoints
    lr: float = 1e-2  # Adam learning rate of the norm layers' fine-tuning
    task_cpus: float = 1.0  # logical CPUs per Ray task (one task per concept)
    threads: int = 1  # torch threads per task and in the driver


# Fields that do not change what is written: a re-run may change them.
NOT_RECORDED = {"task_cpus", "threads"}


def recorded_settings(cfg: NormZooConfig) -> dict[str, Any]:
    """The settings that shape the zoo, as ``base.json`` records them."""
    values = dataclasses.asdict(cfg)
    return {k: v for k, v in values.items() if k not in NOT_RECORDED}


def check_config(cfg: NormZooConfig) -> None:
    """Values that cannot build a zoo, as a one-line `ConfigError`, before anything runs."""
    positive = ("width", "base_epochs", "batch_size", "train_concepts", "k_checkpoints")
    for name in (*positive, "steps", "checkpoint_every"):
        least = 1 if name in positive else 0
        if getattr(cfg, name) < least:
            raise ConfigError(f"normzoo {name}={getattr(cfg, name)} must be >= {least}")
    if cfg.k_checkpoints > 1 and cfg.checkpoint_every < 1:
        raise ConfigError("normzoo checkpoint_every must be >= 1 for more than one checkpoint")
    if not 0.0 < cfg.heldout_fraction < 1.0:
        raise ConfigError(f"normzoo heldout_fraction={cfg.heldout_fraction} must be in (0, 1)")


def concepts_of(cfg: NormZooConfig) -> list[SubsetConcept]:
    """The planned concepts (train, val, heldout) of this config."""
    return plan_concepts(
        10, cfg.classes_per_concept, cfg.train_concepts, cfg.val_concepts,
        cfg.heldout_concepts, derived_seed(cfg.seed, _ZOO_KEY, 2),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Pure: the base and one concept's fine-tuning (no Ray)
# ---------------------------------------------------------------------------------------


def train_base(cfg: NormZooConfig) -> NormClassifierBaseModel:
    """The base ConvNet-3, trained whole on every class of the digits' training split."""
    start = time.perf_counter()
    data = digits(cfg.seed, cfg.heldout_fraction)
    model = build_classifier("convnet", data.spec, cfg.width, derived_seed(cfg.seed, _ZOO_KEY, 0))
    model.train()
    train_epochs(
        model, data, cfg.base_epochs, cfg.base_lr, cfg.batch_size,
        derived_seed(cfg.seed, _ZOO_KEY, 1),
    )  # fmt: skip
    info = {
        "zoo": recorded_settings(cfg),
        **accuracies(model, data),  # train_acc, heldout_acc over all ten classes
        "seconds": round(time.perf_counter() - start, 2),
    }
    return NormClassifierBaseModel(model, cfg.width, (cfg.seed, cfg.heldout_fraction), info)


def finetune(
    base: NormClassifierBaseModel, cfg: NormZooConfig, task: TaskData, seed: int
) -> list[dict[str, Any]]:
    """Adam on the norm parameters only, through the base's functional forward and function
    loss (what the generator's function-space term runs), from the base's values; returns
    the K checkpoints: step, `base.quality` metrics, state (manifest keys). A non-finite loss
    stops it early with fewer checkpoints."""
    params = {k: v.clone().requires_grad_(True) for k, v in base.state().items()}
    optimizer = torch.optim.Adam(params.values(), lr=cfg.lr)
    x, y = base.tensors(task.train_inputs, task.train_targets)
    generator = torch.Generator().manual_seed(seed)
    last = cfg.steps + (cfg.k_checkpoints - 1) * cfg.checkpoint_every
    checkpoints = []
    if cfg.steps == 0:
        checkpoints.append(_checkpoint(base, task, params, 0))
    for step in range(1, last + 1):
        index = torch.randint(len(y), (min(cfg.batch_size, len(y)),), generator=generator)
        loss = base.function_loss(base.functional_forward(params, x[index]), y[index])
        if not math.isfinite(loss.item()):
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= cfg.steps and (step - cfg.steps) % max(cfg.checkpoint_every, 1) == 0:
            checkpoints.append(_checkpoint(base, task, params, step))
    return checkpoints


def _checkpoint(
    base: NormClassifierBaseModel, task: TaskData, params: dict[str, torch.Tensor], step: int
) -> dict[str, Any]:
    state = {k: v.detach().clone() for k, v in params.items()}
    return {"step": step, "metrics": base.quality(state, task), "state": state}


def collect_concept(
    out: Path, cfg: NormZooConfig, concept: SubsetConcept, index: int
) -> dict[str, Any]:
    """Fine-tune one concept and write its weights, then its status (the status last: it
    marks the concept finished). Pure of Ray: the Ray task is a thin wrapper around it."""
    start = time.perf_counter()
    base = NormClassifierBaseModel.load(Path(out) / BASE_DIR)
    store = WeightStore(out)
    (task,) = base.task_data(out, [concept.id])
    checkpoints = finetune(base, cfg, task, derived_seed(cfg.seed, _ZOO_KEY, 3, index))
    status = {
        "concept_id": concept.id,
        "concept_text": concept.text,
        "split": concept.split,
        "classes": list(concept.classes),
        "base": base.quality(None, task),  # what the concept starts from
        "checkpoint_steps": [c["step"] for c in checkpoints],
    }
    if len(checkpoints) == cfg.k_checkpoints:
        meta = {**status, "converged_step": checkpoints[0]["step"]}
        vectors = [flatten(c["state"], base.manifest()) for c in checkpoints]
        store.write_concept(meta, checkpoints, vectors, metrics=METRICS)
        # "converged": what readers of a weight dataset take as "has its K checkpoints"
        status.update(status="converged", reason=f"a fixed budget of {cfg.steps} steps")
        status["metrics"] = checkpoints[-1]["metrics"]
    else:
        status.update(status="nan", reason="the fine-tuning loss became non-finite")
    status["seconds"] = round(time.perf_counter() - start, 3)
    store.record_status(concept.id, status)
    return status


def _concept_task(
    cfg_dict: dict[str, Any], out: str, concept: SubsetConcept, index: int
) -> dict[str, Any]:
    cfg = NormZooConfig(**cfg_dict)
    with torch_threads(cfg.threads):
        return collect_concept(Path(out), cfg, concept, index)


# ---------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------


def ensure_base(out: Path, cfg: NormZooConfig) -> NormClassifierBaseModel:
    """Train the base once per run folder; a later run loads it, if it has these settings."""
    folder = Path(out) / BASE_DIR
    if (folder / BASE_FILE).exists():
        base = NormClassifierBaseModel.load(folder)
        recorded = base.info.get("zoo", {})
        if recorded != recorded_settings(cfg):
            diffs = [
                f"{k}: {recorded.get(k)!r} → {v!r}"
                for k, v in recorded_settings(cfg).items()
                if recorded.get(k) != v
            ]
            raise RunFolderError(
                f"{folder} was built with other zoo settings ({'; '.join(diffs)}); "
                "build into a new folder, or use the settings it was built with"
            )
        return base
    with torch_threads(cfg.threads):
        base = train_base(cfg)
    base.save(folder)
    print0(
        f"normzoo: base ConvNet-3 {base.fingerprint} trained in {base.info['seconds']} s "
        f"(held-out accuracy {base.info['heldout_acc']:.3f} over ten classes) → {folder}"
    )
    return base


def write_concept_table(out: Path, concepts: list[SubsetConcept]) -> None:
    path = Path(out) / CONCEPTS_FILE
    if path.exists():
        if load_concepts(path) != concepts:
            raise RunFolderError(
                f"{path} lists other concepts than these settings plan; build into a new folder"
            )
        return
    write_concepts(concepts, path)


def build_zoo(out: Path, cfg: NormZooConfig | None = None) -> dict[str, Any]:
    """Build (or finish) the zoo in run folder ``out``; returns the summary it writes to
    ``weights/_SUCCESS.json``. The concepts are fine-tuned as Ray tasks (module docstring)."""
    import ray

    cfg = cfg or NormZooConfig()
    check_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    concepts = concepts_of(cfg)
    write_concept_table(out, concepts)
    base = ensure_base(out, cfg)
    store = WeightStore(out)
    store.save_manifest(base.manifest())
    collected = [(i, c) for i, c in enumerate(concepts) if c.split != "heldout"]
    finished = store.finished()
    todo = [(i, c) for i, c in collected if c.id not in finished]
    print0(
        f"normzoo: {len(collected)} concepts to collect ({len(collected) - len(todo)} on disk), "
        f"{base.manifest().total_numel} norm values each, K={cfg.k_checkpoints}"
    )
    if todo:
        init_ray()
        task = ray.remote(num_cpus=cfg.task_cpus, max_retries=0)(_concept_task)
        cfg_dict = dataclasses.asdict(cfg)
        pending = [task.remote(cfg_dict, str(out), c, i) for i, c in todo]
        for done in range(1, len(todo) + 1):
            ready, pending = ray.wait(pending, num_returns=1)
            status = ray.get(ready[0])
            elapsed = time.perf_counter() - start
            metrics = status.get("metrics", {})
            print0(
                f"normzoo: {done}/{len(todo)} {status['concept_id']} ({status['concept_text']}) "
                f"{status['status']}: error {status['base']['error']:.3f} → "
                f"{metrics.get('error', math.nan):.3f} ({status['seconds']:.1f} s), "
                f"ETA {elapsed / done * (len(todo) - done):.0f} s"
            )
    statuses = store.statuses()
    converged = [c.id for _, c in collected if statuses[c.id]["status"] == "converged"]
    summary = {
        "family": base.family,
        "selected": len(collected),
        "converged": len(converged),
        "converged_share": len(converged) / len(collected),
        "rows": len(converged) * cfg.k_checkpoints,
        "seconds_this_run": round(time.perf_counter() - start, 2),
        "zoo": recorded_settings(cfg),
    }
    summary["files"] = stage_files(out, "collect")
    write_json(store.folder / SUCCESS_FILE, summary)
    return summary
