"""The model zoo: classifiers trained on Ray tasks, stored in wgen's Parquet weight format.

Two settings (p-diff's):

- ``convnet``: one ConvNet-3 trained whole from scratch; then only the selected parameters
  (`PdiffConfig.convnet_select`, default the last two norm layers) train on, with BatchNorm's
  running statistics frozen so that everything else is one fixed base. The last epoch is cut
  into `checkpoints` steps and a checkpoint is saved after each.
- ``mlp``: an MLP-3 trained whole from `checkpoints` seeds, one checkpoint per seed.

A zoo is a list of shards; a shard is one Ray task that writes one Parquet file (written
through a temporary name and a rename). A re-run trains only the shards whose file is
missing, so an interrupted collection resumes and never duplicates a model.

Layout of ``<out>/pdiff/<setting>/zoo/`` (the GAN weight dataset's format,
`wgen.weights.store`)::

    <shard>.parquet     one row per checkpoint: concept_id (the model id), concept_text (the
                        setting), split, checkpoint, step, train_acc, heldout_acc, and one
                        list<float32> column per layer group (g000, g001, ...)
    _manifest.json      the groups (`wgen.weights.format.Manifest`) and the base fingerprint
    _base.safetensors   the whole base classifier (frozen parameters and BN buffers) that
                        the selected parameters load into

``pandas.read_parquet(<zoo folder>)`` opens it in one call.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from wgen.config import Config, PdiffConfig
from wgen.core.runtime import atomic_file, init_ray, print0, torch_threads
from wgen.models.classifiers import build_classifier
from wgen.pdiff.data import ImageData, PdiffError, load_images
from wgen.weights.format import Manifest, Selection, WeightFormatError, build_manifest, flatten
from wgen.weights.format import unflatten as unflatten_vectors
from wgen.weights.store import WeightStore, group_column

SETTINGS = ("convnet", "mlp")
PDIFF_DIR = "pdiff"
BASE_FILE = "_base.safetensors"  # "_": skipped by Parquet readers
_SETTING_KEY = {"convnet": 1, "mlp": 2}  # mixed into every seed so the settings never share one


def zoo_folder(setting: str) -> str:
    """The zoo's folder relative to the run folder (for `WeightStore(out, folder)`)."""
    return f"{PDIFF_DIR}/{setting}/zoo"


def derived_seed(seed: int, *keys: int) -> int:
    """An independent 63-bit seed per (purpose, index) from the one config seed."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(2, np.uint64)[0] >> 1)


# ---------------------------------------------------------------------------------------
# Settings: which classifier, which parameters
# ---------------------------------------------------------------------------------------


def check_setting(setting: str) -> None:
    if setting not in SETTINGS:
        raise PdiffError(
            f"unknown p-diff setting {setting!r} in pdiff.settings; valid: {list(SETTINGS)}"
        )


def build_model(cfg: PdiffConfig, setting: str, data: ImageData, seed: int | None) -> nn.Module:
    width = cfg.convnet_width if setting == "convnet" else cfg.mlp_hidden
    return build_classifier(setting, data.spec, width, seed)


def selection_for(cfg: PdiffConfig, setting: str) -> Selection:
    patterns = cfg.convnet_select if setting == "convnet" else cfg.mlp_select
    return Selection(include=tuple(patterns))


def parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only parameters: BatchNorm's running statistics are buffers and never selected."""
    return dict(model.named_parameters())


def zoo_manifest(model: nn.Module, cfg: PdiffConfig, setting: str, fingerprint: str) -> Manifest:
    """The manifest of the setting's selection; a spec that matches nothing is a one-line error."""
    selection = selection_for(cfg, setting)
    names = list(parameters(model))
    if not any(selection.matches(n) for n in names):
        raise PdiffError(
            f"pdiff.{setting}_select={list(selection.include)} matches none of the "
            f"{len(names)} parameters of the {setting}: {', '.join(names)}"
        )
    return build_manifest(parameters(model), selection, fingerprint)


def base_fingerprint(model: nn.Module, selection: Selection) -> str:
    """A short sha256 of what the zoo does not vary: architecture (names, shapes) and the bytes
    of every unselected tensor (frozen parameters and buffers). Whole-model zoos hash only
    their architecture, so every seed shares it."""
    digest = hashlib.sha256()
    state = model.state_dict()
    digest.update(
        json.dumps([type(model).__name__, [[k, list(t.shape)] for k, t in state.items()]]).encode()
    )
    for key, tensor in state.items():
        if not (key in parameters(model) and selection.matches(key)):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_settings(config: Config, data: ImageData) -> dict[str, Manifest]:
    """Every setting's name and selection, checked on a fresh model (before Ray starts)."""
    manifests = {}
    for setting in config.pdiff.settings:
        check_setting(setting)
        model = build_model(config.pdiff, setting, data, seed=0)
        manifests[setting] = zoo_manifest(model, config.pdiff, setting, "unchecked")
    return manifests


# ---------------------------------------------------------------------------------------
# Training and evaluating one classifier (pure, no Ray)
# ---------------------------------------------------------------------------------------


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of one shuffled epoch."""
    order = torch.randperm(n, generator=generator)
    yield from order.split(batch_size)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> float:
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_epochs(
    model: nn.Module, data: ImageData, epochs: int, lr: float, batch_size: int, seed: int
) -> None:
    """Adam on every trainable parameter for ``epochs`` shuffled epochs."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in batches(len(data.y_train), batch_size, generator):
            train_step(model, optimizer, data.x_train[index], data.y_train[index])


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Predicted classes, in eval mode (BatchNorm on its running statistics)."""
    was_training = model.training
    model.eval()
    labels = model(x).argmax(dim=1).numpy()
    model.train(was_training)
    return labels


def accuracies(model: nn.Module, data: ImageData) -> dict[str, float]:
    return {
        "train_acc": float((predict(model, data.x_train) == data.y_train.numpy()).mean()),
        "heldout_acc": float((predict(model, data.x_heldout) == data.y_heldout.numpy()).mean()),
    }


def load_vector(model: nn.Module, manifest: Manifest, vector: np.ndarray) -> nn.Module:
    """Load one flat vector (the groups concatenated) into ``model``'s selected parameters."""
    splits = np.cumsum(manifest.group_lengths)[:-1]
    state = unflatten_vectors(np.split(np.asarray(vector, np.float32), splits), manifest)
    missing = set(state) - set(parameters(model))
    if missing:
        raise WeightFormatError(f"the model has no parameters {sorted(missing)}")
    model.load_state_dict(state, strict=False)
    return model


# ---------------------------------------------------------------------------------------
# Shards: what one Ray task trains and writes
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """One Ray task's work: the models of ``indices`` (seeds for mlp; checkpoints for convnet)."""

    name: str
    indices: tuple[int, ...]


def plan_shards(cfg: PdiffConfig, setting: str) -> list[Shard]:
    """convnet: one task (the checkpoints are consecutive steps of one run); mlp: the seeds
    split over `zoo_tasks` tasks."""
    if setting == "convnet":
        return [Shard(f"{setting}-000", tuple(range(cfg.checkpoints)))]
    parts = np.array_split(np.arange(cfg.checkpoints), min(cfg.zoo_tasks, cfg.checkpoints))
    return [Shard(f"{setting}-{i:03d}", tuple(int(j) for j in p)) for i, p in enumerate(parts)]


def train_convnet_zoo(
    cfg: PdiffConfig, data: ImageData
) -> tuple[nn.Module, Manifest, list[dict[str, Any]]]:
    """p-diff's protocol: train whole, then the selection only; a checkpoint after every step
    of the last epoch, which is cut into `checkpoints` steps. Returns the base model (its
    selected parameters at the last checkpoint), the manifest and one row per checkpoint."""
    setting = "convnet"
    model = build_model(cfg, setting, data, derived_seed(cfg.seed, _SETTING_KEY[setting], 0))
    model.train()
    train_epochs(
        model, data, cfg.convnet_epochs, cfg.convnet_lr, cfg.batch_size,
        derived_seed(cfg.seed, _SETTING_KEY[setting], 1),
    )  # fmt: skip
    # From here BatchNorm uses (and keeps) its running statistics: the base is fixed and only
    # the selected affine parameters move.
    model.eval()
    selection = selection_for(cfg, setting)
    for name, p in model.named_parameters():
        p.requires_grad_(selection.matches(name))
    manifest = zoo_manifest(model, cfg, setting, base_fingerprint(model, selection))
    if cfg.norm_epochs > 1:
        train_epochs(
            model, data, cfg.norm_epochs - 1, cfg.norm_lr, cfg.batch_size,
            derived_seed(cfg.seed, _SETTING_KEY[setting], 2),
        )  # fmt: skip
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.norm_lr)
    generator = torch.Generator().manual_seed(derived_seed(cfg.seed, _SETTING_KEY[setting], 3))
    order = torch.randperm(len(data.y_train), generator=generator)
    rows = []
    for step, index in enumerate(order.tensor_split(cfg.checkpoints), start=1):
        train_step(model, optimizer, data.x_train[index], data.y_train[index])
        rows.append(
            {
                "id": f"{setting}-s{cfg.seed}",
                "checkpoint": step - 1,
                "step": step,
                **accuracies(model, data),
                "vectors": flatten(parameters(model), manifest),
            }
        )
    return model, manifest, rows


def train_mlp(cfg: PdiffConfig, data: ImageData, index: int) -> tuple[nn.Module, dict[str, Any]]:
    """One MLP-3 of the zoo, trained whole from seed ``index``."""
    setting = "mlp"
    model = build_model(cfg, setting, data, derived_seed(cfg.seed, _SETTING_KEY[setting], 0, index))
    train_epochs(
        model, data, cfg.mlp_epochs, cfg.mlp_lr, cfg.batch_size,
        derived_seed(cfg.seed, _SETTING_KEY[setting], 1, index),
    )  # fmt: skip
    return model, {"id": f"{setting}-s{index:04d}", "checkpoint": 0, "step": cfg.mlp_epochs,
                   **accuracies(model, data)}  # fmt: skip


def write_shard(store: WeightStore, shard: Shard, setting: str, rows: list[dict]) -> Path:
    """One Parquet file in the weight dataset's layout (atomic rename)."""
    columns: dict[str, pa.Array] = {
        "concept_id": pa.array([r["id"] for r in rows], pa.string()),
        "concept_text": pa.array([setting] * len(rows), pa.string()),
        "split": pa.array(["train"] * len(rows), pa.string()),
        "checkpoint": pa.array([r["checkpoint"] for r in rows], pa.int32()),
        "step": pa.array([r["step"] for r in rows], pa.int64()),
        "train_acc": pa.array([r["train_acc"] for r in rows], pa.float64()),
        "heldout_acc": pa.array([r["heldout_acc"] for r in rows], pa.float64()),
    }
    for g in range(len(rows[0]["vectors"])):
        columns[group_column(g)] = pa.array(
            [np.asarray(r["vectors"][g], np.float32) for r in rows], pa.list_(pa.float32())
        )
    path = store.folder / f"{shard.name}.parquet"
    with atomic_file(path) as tmp:
        pq.write_table(pa.table(columns), tmp)
    return path


def save_base(store: WeightStore, model: nn.Module) -> None:
    path = store.folder / BASE_FILE
    with atomic_file(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))


def collect_shard(cfg: PdiffConfig, out: Path, setting: str, shard: Shard) -> dict[str, Any]:
    """Train one shard's models and write its Parquet file (and, from the first shard, the
    manifest and base). Pure of Ray: the Ray task is a thin wrapper around it."""
    start = time.perf_counter()
    data = load_images(cfg)
    store = WeightStore(out, zoo_folder(setting))
    if setting == "convnet":
        base, manifest, rows = train_convnet_zoo(cfg, data)
    else:
        rows = []
        for index in shard.indices:
            model, row = train_mlp(cfg, data, index)
            selection = selection_for(cfg, setting)
            manifest = zoo_manifest(model, cfg, setting, base_fingerprint(model, selection))
            row["vectors"] = flatten(parameters(model), manifest)
            rows.append(row)
            if index == 0:
                base = model
    store.save_manifest(manifest)  # the same layout from every shard, or an error
    if shard.indices[0] == 0:
        save_base(store, base)
    write_shard(store, shard, setting, rows)
    return {"shard": shard.name, "models": len(rows), "seconds": time.perf_counter() - start}


def _zoo_task(config_dict: dict, out: str, setting: str, shard: Shard) -> dict[str, Any]:
    config = Config.from_dict(config_dict)
    with torch_threads(config.pdiff.threads):
        return collect_shard(config.pdiff, Path(out), setting, shard)


def missing_shards(out: Path, setting: str, cfg: PdiffConfig) -> list[Shard]:
    store = WeightStore(out, zoo_folder(setting))
    return [
        s for s in plan_shards(cfg, setting) if not (store.folder / f"{s.name}.parquet").exists()
    ]


def run_zoo(config: Config, out: Path, setting: str) -> dict[str, Any]:
    """Collect the shards that are missing, as Ray tasks; returns what ran and the wall time."""
    import ray

    start = time.perf_counter()
    todo = missing_shards(out, setting, config.pdiff)
    total = len(plan_shards(config.pdiff, setting))
    print0(
        f"pdiff: {setting} zoo: {total - len(todo)}/{total} shards on disk, training {len(todo)}"
    )
    if todo:
        init_ray()
        task = ray.remote(num_cpus=config.pdiff.task_cpus, max_retries=0)(_zoo_task)
        refs = [task.remote(config.to_dict(), str(out), setting, s) for s in todo]
        pending, done = list(refs), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            info = ray.get(ready[0])
            done += 1
            elapsed = time.perf_counter() - start
            eta = elapsed / done * (len(todo) - done)
            print0(
                f"pdiff: {setting} zoo shard {info['shard']} ({info['models']} models, "
                f"{info['seconds']:.1f} s) · {done}/{len(todo)} · ETA {eta:.0f} s"
            )
    return {"shards_trained": [s.name for s in todo], "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------
# Reading a zoo
# ---------------------------------------------------------------------------------------


@dataclass
class Zoo:
    """A collected zoo in memory: rows' metadata, flat vectors (M, P), manifest, base state."""

    meta: pd.DataFrame
    vectors: np.ndarray
    manifest: Manifest
    base_state: dict[str, torch.Tensor]

    def model(
        self, cfg: PdiffConfig, setting: str, data: ImageData, vector: np.ndarray
    ) -> nn.Module:
        """The base classifier with ``vector`` loaded into its selected parameters."""
        model = build_model(
            cfg, setting, data, seed=0
        )  # overwritten; seeded to leave the global RNG alone
        model.load_state_dict(self.base_state)
        return load_vector(model, self.manifest, vector)


def read_zoo(out: Path, setting: str) -> Zoo:
    store = WeightStore(out, zoo_folder(setting))
    manifest = store.manifest()
    frame = pd.read_parquet(store.folder)  # one call: side files start with "_"
    frame = frame.sort_values(["concept_id", "checkpoint"], kind="stable").reset_index(drop=True)
    columns = [group_column(g) for g in range(len(manifest.groups))]
    vectors = np.stack(
        [
            np.concatenate([np.asarray(row[c], np.float32) for c in columns])
            for _, row in frame.iterrows()
        ]
    )
    base = load_file(str(store.folder / BASE_FILE))
    return Zoo(frame.drop(columns=columns), vectors, manifest, base)
