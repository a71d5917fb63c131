"""The weight dataset seen as training samples of the denoiser: one sample = one b-block.

From ``<out>/weights/`` (`wgen.weights.store`) this module derives everything the denoiser's
training needs, for the block size b of the config (b is searched by Ray Tune, so blocks
are cut here, at read time, and never stored):

- the weight manifest and a `BlockCodec` for b: the `BlockLayout`, the centre (the mean
  training checkpoint) and `BlockStats`, fitted on TRAIN-split rows only (validation rows
  are encoded with them);
- the concept table: ids, texts, splits and their cached text embeddings τ(T)
  (`wgen.generator.textcache`), so workers look a block's condition up by concept index;
- Ray Datasets of blocks: ``read_parquet`` over the concept files of one split, then
  ``map_batches(cut_rows_batch)``, which turns every checkpoint row into its N blocks
  (a flat-map), normalised. Each output row is one block:

  ====================  =========  ==========================================
  column                dtype      meaning
  ====================  =========  ==========================================
  ``x``                 f32 (b,)   the normalised block w_n (padding = 0)
  ``mask``              bool (b,)  True on real values, False on padding
  ``n``                 int64      block index n over all groups
  ``concept``           int64      row of the concept in the embedding table
  ====================  =========  ==========================================

Only the concept files (``c*.parquet``, `WeightStore.parquet_files`) are read, so the text
cache and anything else stored beside them never reach the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from wgen.core.errors import ConfigError
from wgen.data.concepts import PRIMITIVES, coverage_first, paraphrases
from wgen.data.pairs import CONCEPTS_FILE, load_concepts
from wgen.generator.text import pad_token_states
from wgen.generator.textcache import cached_embeddings
from wgen.models.base import BaseModel
from wgen.weights.blocks import BlockLayout
from wgen.weights.codec import BlockCodec
from wgen.weights.format import Manifest
from wgen.weights.store import WeightStore, group_column

TRAIN, VAL = "train", "val"
SAMPLE_COLUMNS = ("x", "mask", "n", "concept")


# ---------------------------------------------------------------------------------------
# Pure functions: rows → blocks
# ---------------------------------------------------------------------------------------


def row_vectors(frame: pd.DataFrame, n_groups: int) -> list[list[np.ndarray]]:
    """The G flat vectors of every checkpoint row of a `WeightStore.read` frame."""
    columns = [group_column(g) for g in range(n_groups)]
    return [
        [np.asarray(v, dtype=np.float32) for v in values]
        for values in frame[columns].itertuples(index=False)
    ]


def cut_rows(
    concept_ids: np.ndarray,
    vectors: list[list[np.ndarray]],
    codec: BlockCodec,
    concept_index: dict[str, int],
) -> dict[str, np.ndarray]:
    """R checkpoint rows → R·N normalised block samples (the columns in the module docstring).

    Blocks of one row stay consecutive (n = 0 … N−1); the training loop shuffles locally.
    """
    unknown = sorted(set(concept_ids) - set(concept_index))
    if unknown:
        raise KeyError(f"concepts {unknown} are not in the concept table")
    blocks, mask = codec.encode(vectors)  # (R, N, b), (N, b)
    rows, n_blocks, block_size = blocks.shape
    return {
        "x": blocks.reshape(rows * n_blocks, block_size),
        "mask": np.broadcast_to(mask, blocks.shape).reshape(rows * n_blocks, block_size).copy(),
        "n": np.tile(codec.layout.block_index(), rows),
        "concept": np.repeat([concept_index[c] for c in concept_ids], n_blocks).astype(np.int64),
    }


def _list_column_matrix(column: pa.ChunkedArray, length: int) -> np.ndarray:
    """A list<float32> column of R equal-length lists → (R, length) float32, without copies per row."""
    values = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(-1, length)


def cut_rows_batch(
    table: pa.Table, codec: BlockCodec, concept_index: dict[str, int]
) -> dict[str, np.ndarray]:
    """`map_batches` adapter: a pyarrow batch of checkpoint rows → `cut_rows`' block samples."""
    groups = [
        _list_column_matrix(table.column(group_column(g)), length)
        for g, length in enumerate(codec.layout.lengths)
    ]
    vectors = [[group[r] for group in groups] for r in range(table.num_rows)]
    concept_ids = np.asarray(table.column("concept_id").to_pylist())
    return cut_rows(concept_ids, vectors, codec, concept_index)


# ---------------------------------------------------------------------------------------
# The concept table and block statistics of one weight dataset
# ---------------------------------------------------------------------------------------


@dataclass
class BlockData:
    """What the denoiser's training needs from a weight dataset for one block size b.

    Attributes:
        manifest: the weight layout (groups, base-model fingerprint).
        codec: blocks of b values and their normalisation, fitted on the training split.
        concepts: one row per concept with weights: concept_id, concept_text, split.
        text_states: τ of every wording, from the text cache: (W, text_dim) pooled vectors
            or (W, tokens, text_dim) zero-padded token states (`DenoiserConfig.text`).
            Wording c < C is concept c's own text; paraphrases follow.
        wordings: (C, P + 1) int64, the wording ids of each concept (own text first; rows
            are padded with the own text, and only the first ``n_wordings[c]`` are drawn).
        n_wordings: (C,) int64, how many wordings each concept has (1 for val/held-out).
        text_encoder: the encoder's name (`TrainConfig.text_encoder`).
        files: {split: [concept Parquet file, ...]}.
        rows: {split: number of checkpoint rows}.
    """

    manifest: Manifest
    codec: BlockCodec
    concepts: pd.DataFrame
    text_states: np.ndarray
    wordings: np.ndarray
    n_wordings: np.ndarray
    text_encoder: str
    files: dict[str, list[str]]
    rows: dict[str, int]

    @property
    def layout(self) -> BlockLayout:
        return self.codec.layout

    @property
    def text_dim(self) -> int:
        return int(self.text_states.shape[-1])

    @property
    def embeddings(self) -> np.ndarray:
        """τ of every concept's own text, row i = concept i: (C, ...)."""
        return self.text_states[: len(self.concepts)]

    @property
    def concept_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.concepts["concept_id"])}

    def concepts_of(self, split: str) -> pd.DataFrame:
        return self.concepts[self.concepts["split"] == split]

    def blocks(self, split: str) -> int:
        """Block samples in one pass over a split (rows × N)."""
        return self.rows.get(split, 0) * self.layout.n_blocks

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a Ray Train ``train_loop_config`` (no file paths: workers need none)."""
        return {
            "manifest": self.manifest.to_json(),
            "block_size": self.layout.block_size,
            **self.codec.to_dict(),
            "concepts": self.concepts.to_dict(orient="list"),
            "text_states": self.text_states,
            "wordings": self.wordings,
            "n_wordings": self.n_wordings,
            "text_encoder": self.text_encoder,
            "rows": dict(self.rows),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BlockData:
        manifest = Manifest.from_json(values["manifest"])
        layout = BlockLayout.from_lengths(manifest.group_lengths, values["block_size"])
        return cls(
            manifest=manifest,
            codec=BlockCodec.from_dict(values, layout),
            concepts=pd.DataFrame(values["concepts"]),
            text_states=np.asarray(values["text_states"], dtype=np.float32),
            wordings=np.asarray(values["wordings"], dtype=np.int64),
            n_wordings=np.asarray(values["n_wordings"], dtype=np.int64),
            text_encoder=values["text_encoder"],
            files={},
            rows=dict(values["rows"]),
        )


def wording_table(
    own_texts: list[str], extra: list[list[str]]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """All wordings (own texts first, then each concept's extra ones), the (C, P + 1) table of
    wording ids per concept (padded with the own text) and the count per concept."""
    texts = list(own_texts)
    width = 1 + max((len(e) for e in extra), default=0)
    table = np.tile(np.arange(len(own_texts), dtype=np.int64)[:, None], (1, width))
    counts = np.ones(len(own_texts), dtype=np.int64)
    for c, wordings in enumerate(extra):
        for j, text in enumerate(wordings, start=1):
            table[c, j] = len(texts)
            texts.append(text)
        counts[c] += len(wordings)
    return texts, table, counts


def text_state_matrix(states: dict[str, np.ndarray], texts: list[str], view: str) -> np.ndarray:
    """Cached τ of ``texts`` as one array: (W, dim) pooled or (W, tokens, dim) padded tokens."""
    if view == "tokens":
        return pad_token_states([states[t] for t in texts])
    return np.stack([states[t] for t in texts]).astype(np.float32)


def training_subset(out: str | Path, meta: pd.DataFrame, n: int) -> set[str]:
    """Ids of ``n`` of the collected training concepts in ``meta``: those covering the
    (primitive, strength) edits of the collected validation concepts first, then by id
    (`wgen.data.concepts.coverage_first`), so a learning curve over ``n`` only adds concepts."""
    programs = {c.id: c for c in load_concepts(Path(out) / CONCEPTS_FILE)}
    by_split = meta.drop_duplicates("concept_id").groupby("split")["concept_id"]
    ids = {split: sorted(group) for split, group in by_split}
    train = [programs[c] for c in ids.get(TRAIN, [])]
    targets = [programs[c] for c in ids.get(VAL, [])]
    return {c.id for c in coverage_first(train, n, targets, vocabulary=train)}


def load_block_data(
    out: str | Path,
    block_size: int,
    text_encoder: str,
    center: bool = True,
    text_view: str = "pooled",
    n_paraphrases: int = 0,
    seed: int = 0,
    max_train_concepts: int | None = None,
) -> BlockData:
    """Block codec fitted on the training split, and the embedded concept table, of
    ``<out>/weights`` (``center``: `DenoiserConfig.center`; ``text_view``:
    `DenoiserConfig.text`). Every training concept also gets ``n_paraphrases`` wordings
    from the concept grammar (`wgen.data.concepts.paraphrases`); other splits keep theirs.
    ``max_train_concepts`` (`TrainConfig.max_train_concepts`) keeps that many of the
    collected training concepts, coverage first (`training_subset`)."""
    store = WeightStore(out)
    manifest = store.manifest()
    layout = BlockLayout.from_lengths(manifest.group_lengths, block_size)
    meta = store.read(with_vectors=False)
    if max_train_concepts is not None:
        kept = training_subset(out, meta, max_train_concepts)
        meta = meta[(meta["split"] != TRAIN) | meta["concept_id"].isin(kept)]
    if not (meta["split"] == TRAIN).any():
        raise ValueError(
            f"the weight dataset under {store.folder} has no training-split concepts; "
            "collect more concepts (collect.max_concepts)"
        )
    concepts = (
        meta[["concept_id", "concept_text", "split"]]
        .drop_duplicates("concept_id")
        .reset_index(drop=True)
    )
    extra: list[list[str]] = [[] for _ in range(len(concepts))]
    if n_paraphrases > 0:
        programs = {c.id: c for c in load_concepts(Path(out) / CONCEPTS_FILE)}
        # the grammar rewords its own edits only (another family's concepts, e.g. digit
        # classes, have none): one line before anything trains, not a KeyError inside it
        edits = {name for c in programs.values() for name, _ in c.edits}
        unknown = sorted(edits - set(PRIMITIVES))
        if unknown:
            raise ConfigError(
                f"train.paraphrases={n_paraphrases} rewords concepts with the edit grammar "
                f"(wgen.data.concepts), which has no words for the edits {unknown[:6]} of "
                f"{Path(out) / CONCEPTS_FILE}; set train.paraphrases=0"
            )
        extra = [
            paraphrases(programs[cid], n_paraphrases, seed) if split == TRAIN else []
            for cid, split in zip(concepts["concept_id"], concepts["split"], strict=True)
        ]
    texts, table, counts = wording_table(list(concepts["concept_text"]), extra)
    states = cached_embeddings(out, text_encoder, texts, view=text_view)
    file_of = {p.stem: str(p) for p in store.parquet_files()}
    train_rows = store.read(splits=[TRAIN])
    train_rows = train_rows[train_rows["concept_id"].isin(set(concepts["concept_id"]))]
    files = {
        split: [file_of[c] for c in concepts.loc[concepts["split"] == split, "concept_id"]]
        for split in (TRAIN, VAL)
    }
    return BlockData(
        manifest=manifest,
        codec=BlockCodec.fit(row_vectors(train_rows, len(layout.lengths)), layout, center),
        concepts=concepts,
        text_states=text_state_matrix(states, texts, text_view),
        wordings=table,
        n_wordings=counts,
        text_encoder=text_encoder,
        files=files,
        rows={str(k): int(v) for k, v in meta["split"].value_counts().items()},
    )


# ---------------------------------------------------------------------------------------
# Ray Datasets
# ---------------------------------------------------------------------------------------


@contextmanager
def _parquet_datasource_v1() -> Iterator[None]:
    """Read Parquet through Ray Data's V1 datasource for the reads inside the block.

    Ray 2.60 routes `read_parquet` through DataSourceV2 by default; here its ListFiles task
    spent 15-22 s of wall time (0.1-0.4 s of CPU) on every read of a few local files,
    while the V1 path read the same files in about 1 s once its workers were warm
    (measured on the tiny run, 2 busy cores). `use_datasource_v2` is Ray's documented
    opt-out; the previous value is restored so other stages keep Ray's default.
    """
    import ray

    context = ray.data.DataContext.get_current()
    before = context.use_datasource_v2
    context.use_datasource_v2 = False
    try:
        yield
    finally:
        context.use_datasource_v2 = before


def block_dataset(data: BlockData, split: str):
    """A Ray Dataset of the block samples of one split (one row per block, unshuffled)."""
    import ray

    files = data.files.get(split, [])
    if not files:
        raise ValueError(f"no {split}-split concept files in the weight dataset")
    columns = ["concept_id"] + [group_column(g) for g in range(len(data.layout.lengths))]
    with _parquet_datasource_v1():
        rows = ray.data.read_parquet(files).select_columns(columns)
    return rows.map_batches(
        cut_rows_batch,
        fn_kwargs={"codec": data.codec, "concept_index": data.concept_index},
        batch_format="pyarrow",
    )


def block_datasets(data: BlockData) -> dict[str, Any]:
    """{"train": ..., "val": ...} for `TorchTrainer(datasets=...)`; "val" only if it has rows.

    The blocks are cut once and kept in the object store (``materialize``): re-running the
    read and cut every epoch cost 10-20 s an epoch on a loaded 2-core machine, streaming the
    materialised blocks 0.1 s (measured on the tiny preset). The training split's Ray blocks
    come in a new random order every epoch; each worker's local shuffle buffer
    (`TrainConfig.shuffle_buffer`) then mixes rows within a batch.
    """
    datasets = {TRAIN: block_dataset(data, TRAIN).materialize().randomize_block_order()}
    if data.files.get(VAL):
        datasets[VAL] = block_dataset(data, VAL).materialize()
    return datasets


# ---------------------------------------------------------------------------------------
# Whole concepts for the function-space term
# ---------------------------------------------------------------------------------------

CONCEPT_DATASET = "concepts"  # the TorchTrainer dataset of training concepts' tasks


def concept_rows(
    out: str | Path, data: BlockData, base: BaseModel, func_pairs: int
) -> list[dict[str, Any]]:
    """One row per training concept for the whole-concept steps: its index, the normalised
    blocks of its K checkpoints (K, N, b), and ``func_pairs`` (`train.func_pairs`) of its
    TRAINING inputs and targets (`BaseModel.task_data`; for the GAN, image pairs).

    They are what the concept's own weights were trained on (`TaskData.train_*`); the
    held-back evaluation data never reach the generator's training.
    """
    ids = list(data.concepts_of(TRAIN)["concept_id"])
    index = data.concept_index
    frame = WeightStore(out).read(splits=[TRAIN])
    rows = []
    for task in base.task_data(Path(out), ids):
        checkpoints = frame[frame["concept_id"] == task.concept_id]
        blocks, _ = data.codec.encode(row_vectors(checkpoints, len(data.layout.lengths)))
        rows.append(
            {
                "concept": index[task.concept_id],
                "blocks": blocks,
                "inputs": task.train_inputs[:func_pairs],
                "targets": task.train_targets[:func_pairs],
            }
        )
    return rows


def concept_dataset(rows: list[dict[str, Any]]):
    """A Ray Dataset of `concept_rows`, materialised (a few MB) and sharded by Train."""
    import ray

    return ray.data.from_items(rows).materialize()
