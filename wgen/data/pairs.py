"""Stage 2: concepts × source crops → edited image pairs, written as Parquet by Ray Data.

The driver only plans (which crop goes with which concept). Editor actors rebuild the same
seeded crop pool themselves and apply the edits, so nothing large crosses the object store
and the plan scales to a cluster. Output: ``<out>/pairs/*.parquet`` with one row per pair
(concept id, concept text, split, image id, source and target as PNG bytes) and
``<out>/pairs/_SUCCESS.json`` with the counts, written last: a folder without it is
unfinished and is rebuilt. For a run folder at a URI the shards are written there directly by
Ray Data (from whichever node), and ``_SUCCESS.json`` goes to the staging copy, pushed after.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wgen.config import Config
from wgen.core.integrity import stage_files
from wgen.core.runfolder import stage_record
from wgen.core.runtime import (
    SUCCESS_FILE,
    atomic_dir,
    init_ray,
    print0,
    read_json,
    scoped_data_context,
    write_json,
)
from wgen.core.storage import RunStorage
from wgen.data.concepts import Concept, make_concepts
from wgen.data.images import crop_pool, encode_png, load_photos

PAIRS_DIR = "pairs"
CONCEPTS_FILE = "concepts.jsonl"


def plan_pairs(
    concepts: list[Concept], n_crops: int, pairs_per_concept: int, seed: int
) -> pd.DataFrame:
    """Pick, for every concept, `pairs_per_concept` distinct crops of the pool (seeded).

    Each concept sees its own random subset of the crops, so concepts share photos but not
    an identical image list.
    """
    if pairs_per_concept > n_crops:
        raise ValueError(
            f"data.pairs_per_concept={pairs_per_concept} is more than the {n_crops} crops in the "
            "pool; raise data.crops_per_photo or lower data.pairs_per_concept"
        )
    rng = np.random.default_rng(seed + 7919)
    rows = []
    for concept in concepts:
        for crop_index in rng.choice(n_crops, size=pairs_per_concept, replace=False):
            rows.append(
                {
                    "concept_id": concept.id,
                    "concept_text": concept.text,
                    "split": concept.split,
                    "crop_index": int(crop_index),
                }
            )
    return pd.DataFrame(rows)


class EditorActor:
    """Ray Data actor: holds the crop pool and an editor, turns planned rows into pairs."""

    def __init__(self, config: dict[str, Any]):
        from wgen.data.editors import build_editor

        data = Config.from_dict(config).data
        photos = load_photos(data)
        self.crop_ids, self.crops = crop_pool(
            photos, data.image_size, data.crops_per_photo, data.seed
        )
        self.editor = build_editor(data)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        indices = batch["crop_index"].astype(np.int64)
        sources = self.crops[indices]
        targets = self.editor(sources, [str(t) for t in batch["concept_text"]])
        return {
            "concept_id": batch["concept_id"],
            "concept_text": batch["concept_text"],
            "split": batch["split"],
            "image_id": np.array([self.crop_ids[i] for i in indices]),
            "source_png": encode_png(sources),
            "target_png": encode_png(targets),
        }


def save_concepts(concepts: list[Concept], path: Path) -> None:
    lines = [json.dumps(dataclasses.asdict(c)) for c in concepts]
    path.write_text("\n".join(lines) + "\n")


def load_concepts(path: Path) -> list[Concept]:
    concepts = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            values = json.loads(line)
            values["edits"] = tuple(tuple(e) for e in values["edits"])
            concepts.append(Concept(**values))
    return concepts


def pairs_done(out: Path) -> bool:
    return (Path(out) / PAIRS_DIR / SUCCESS_FILE).exists()


def run_pairs(
    config: Config, out: Path, force: bool = False, storage: RunStorage | None = None
) -> dict[str, Any]:
    """Make ``<out>/pairs/``; a finished folder is kept unless ``force``. ``storage``: the
    run folder at a URI, whose staging copy ``out`` is."""
    import ray

    out = Path(out)
    pairs_dir = out / PAIRS_DIR
    if pairs_done(out) and not force:
        summary = read_json(pairs_dir / SUCCESS_FILE)
        print0(
            f"pairs: {pairs_dir} is complete ({summary['pairs']} pairs); skipping (use --force to rebuild)"
        )
        return summary

    data = config.data
    concepts = make_concepts(data)
    # Read the photos here first so a bad --images folder fails before Ray starts.
    photos = load_photos(data)
    crop_pool(photos[:1], data.image_size, 1, data.seed)  # validates the size
    n_crops = len(photos) * data.crops_per_photo
    plan = plan_pairs(concepts, n_crops, data.pairs_per_concept, data.seed)
    out.mkdir(parents=True, exist_ok=True)
    save_concepts(concepts, out / CONCEPTS_FILE)

    init_ray()
    start = time.perf_counter()
    progress = scoped_data_context(enable_progress_bars=sys.stderr.isatty())
    remote = storage is not None and storage.remote
    if remote:  # an unfinished or replaced folder at the URI: its old shards go first
        storage.remove(PAIRS_DIR)
    with progress, atomic_dir(pairs_dir) as tmp:
        # One block per editor batch, so the pool's actors share the work.
        chunks = [
            plan.iloc[i : i + data.editor_batch_size]
            for i in range(0, len(plan), data.editor_batch_size)
        ]
        dataset = ray.data.from_pandas(chunks).map_batches(
            EditorActor,
            fn_constructor_kwargs={"config": config.to_dict()},
            batch_size=data.editor_batch_size,
            batch_format="numpy",
            # Fractional CPUs and a pool that starts at one actor: a pool that takes every
            # CPU starves the read tasks and hangs on 2 cores (docs/architecture.md).
            compute=ray.data.ActorPoolStrategy(
                min_size=1, max_size=data.editor_actors, initial_size=data.editor_actors
            ),
            num_cpus=data.editor_cpus,
            num_gpus=data.editor_gpus or None,
        )
        target, filesystem = storage.target(PAIRS_DIR) if remote else (str(tmp), None)
        dataset.write_parquet(target, filesystem=filesystem, min_rows_per_file=data.rows_per_shard)
        seconds = time.perf_counter() - start
        summary = {
            "pairs": len(plan),
            "concepts": len(concepts),
            "splits": plan.groupby("split")["concept_id"].nunique().to_dict(),
            "photos": len(photos),
            "editor": data.editor,
            "editor_actors": data.editor_actors,
            "image_size": data.image_size,
            "seconds": round(seconds, 2),
            "pairs_per_second": round(len(plan) / seconds, 1),
            # The preset and the fields that shaped the pairs: later stages check them.
            "record": stage_record(config, "pairs"),
        }
        if not remote:  # (at a URI the shards are not here to hash: readers check footers)
            summary["files"] = stage_files(out, "pairs", folder=tmp)
        write_json(tmp / SUCCESS_FILE, summary)
    print0(
        f"pairs: {summary['pairs']} pairs over {summary['concepts']} concepts in {seconds:.1f} s "
        f"({summary['pairs_per_second']} pairs/s, {data.editor_actors} editor actor(s)) → {pairs_dir}"
    )
    return summary


def read_pairs(
    out: Path, concept_ids: list[str] | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    """Read ``<out>/pairs/`` into pandas (optionally only some concepts), in a stable order."""
    import pyarrow.dataset as pads

    pairs_dir = Path(out) / PAIRS_DIR
    if not pairs_done(out):
        raise FileNotFoundError(
            f"no finished image pairs under {pairs_dir}; make them with `wgen pairs --out {out}`"
        )
    dataset = pads.dataset(str(pairs_dir), format="parquet")
    expression = pads.field("concept_id").isin(concept_ids) if concept_ids is not None else None
    table = dataset.to_table(filter=expression, columns=columns)
    frame = table.to_pandas()
    order = [c for c in ("concept_id", "image_id") if c in frame.columns]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)
