"""The weight dataset on disk: one Parquet file per finished concept, written atomically.

Layout of ``<out>/weights/``::

    <concept_id>.parquet      one row per checkpoint: ids, text, split, step, metrics,
                              one list<float32> column per layer group (g000, g001, ...)
    _manifest.json            groups, shapes, offsets, base fingerprint (wgen.weights.format)
    _status/<concept_id>.json what happened to the concept: converged / not_converged / nan /
                              failed, with the reason and the evaluation history. Written
                              last, so it marks the concept as finished.
    _attempts/<concept_id>.json  attempts started (and by which process), to bound retries

Everything that is not a weight row starts with "_": pyarrow, pandas and Ray Data skip such
names, so ``read_parquet("<out>/weights")`` opens the whole dataset in one call.

A crash loses at most the concepts in flight: their Parquet file is written through a
temporary name and a rename, and without a status file they are simply trained again.
Blocks are not stored: b is a hyperparameter, so blocks are cut when the data is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from wgen.core.runtime import atomic_file, atomic_write_bytes, read_json, write_json
from wgen.weights.format import Manifest, check_compatible, unflatten

WEIGHTS_DIR = "weights"
MANIFEST_FILE = "_manifest.json"  # "_": skipped by Parquet readers
GAN_METRICS = ("l1", "psnr", "fd")  # the GAN's checkpoint metrics (`wgen.gan.quality`)
# the columns of a GAN weight dataset besides the vectors
META_COLUMNS = [
    "concept_id",
    "concept_text",
    "split",
    "checkpoint",
    "step",
    "converged_step",
    *GAN_METRICS,
]
_GROUP = re.compile(r"g\d{3,}")  # the group vector columns, `group_column`


def group_column(index: int) -> str:
    return f"g{index:03d}"


class WeightStore:
    """Reads and writes ``<out>/weights/``."""

    def __init__(self, out: str | Path, folder: str = WEIGHTS_DIR):
        # ``folder``: another weight dataset in the same format (p-diff's zoo: "pdiff/mlp/zoo")
        self.folder = Path(out) / folder
        self.status_dir = self.folder / "_status"
        self.attempts_dir = self.folder / "_attempts"

    # -- manifest -------------------------------------------------------------------------

    def save_manifest(self, manifest: Manifest) -> None:
        """Write the manifest, or check that an existing one describes the same layout."""
        path = self.folder / MANIFEST_FILE
        if path.exists():
            existing = self.manifest()
            if existing.to_json() != manifest.to_json():
                raise ValueError(
                    f"{path} describes another weight layout or base generator "
                    f"(fingerprint {existing.fingerprint} vs {manifest.fingerprint}); "
                    "collect into a new --out folder or remove the old weights"
                )
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, manifest.to_json().encode())

    def manifest(self) -> Manifest:
        path = self.folder / MANIFEST_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"no weight dataset at {self.folder} (missing {MANIFEST_FILE}); "
                "make it with `wgen collect --out <run folder>`"
            )
        return Manifest.from_json(path.read_text())

    # -- status and attempts ----------------------------------------------------------------

    def status(self, concept_id: str) -> dict[str, Any] | None:
        path = self.status_dir / f"{concept_id}.json"
        return read_json(path) if path.exists() else None

    def statuses(self) -> dict[str, dict[str, Any]]:
        if not self.status_dir.exists():
            return {}
        return {p.stem: read_json(p) for p in sorted(self.status_dir.glob("*.json"))}

    def finished(self) -> set[str]:
        return set(self.statuses())

    def record_status(self, concept_id: str, status: dict[str, Any]) -> None:
        write_json(self.status_dir / f"{concept_id}.json", status)

    def unfinished_attempts(self) -> list[str]:
        """Concepts recorded with any status but "converged" (not converged, NaN, failed)."""
        return [c for c, s in self.statuses().items() if s["status"] != "converged"]

    def forget(self, concept_id: str) -> None:
        """Drop a concept's status and attempt count, so the next run trains it afresh."""
        for path in (
            self.status_dir / f"{concept_id}.json",
            self.attempts_dir / f"{concept_id}.json",
        ):
            path.unlink(missing_ok=True)

    def begin_attempt(self, concept_id: str) -> int:
        """Count one more attempt at a concept; returns the attempt number (1 = first).

        An attempt whose process died leaves its count behind, so a concept that kills its
        actor every time is recorded as failed after `max_retries` instead of looping.
        """
        path = self.attempts_dir / f"{concept_id}.json"
        attempts = read_json(path)["attempts"] if path.exists() else []
        attempts.append({"pid": os.getpid(), "node": os.uname().nodename})
        write_json(path, {"attempts": attempts})
        return len(attempts)

    def attempts(self, concept_id: str) -> list[dict[str, Any]]:
        path = self.attempts_dir / f"{concept_id}.json"
        return read_json(path)["attempts"] if path.exists() else []

    # -- rows ---------------------------------------------------------------------------------

    def write_concept(
        self,
        meta: dict[str, Any],
        checkpoints: list[dict[str, Any]],
        vectors: list[list[np.ndarray]],
        metrics: Sequence[str] = GAN_METRICS,
    ) -> Path:
        """Write one concept's K checkpoints as ``<concept_id>.parquet`` (atomic rename).

        ``meta``: concept_id, concept_text, split, converged_step. ``checkpoints[k]``: step and
        metrics. ``vectors[k]``: the flat float32 vector of every group for checkpoint k.
        ``metrics``: the keys of ``checkpoints[k]["metrics"]`` stored as columns (another base
        model family stores its own, e.g. a classifier's error and accuracy).
        """
        if len(checkpoints) != len(vectors) or not checkpoints:
            raise ValueError(
                f"need one vector list per checkpoint, got {len(checkpoints)} and {len(vectors)}"
            )
        columns: dict[str, pa.Array] = {
            "concept_id": pa.array([meta["concept_id"]] * len(checkpoints), pa.string()),
            "concept_text": pa.array([meta["concept_text"]] * len(checkpoints), pa.string()),
            "split": pa.array([meta["split"]] * len(checkpoints), pa.string()),
            "checkpoint": pa.array(range(len(checkpoints)), pa.int32()),
            "step": pa.array([c["step"] for c in checkpoints], pa.int64()),
            "converged_step": pa.array([meta["converged_step"]] * len(checkpoints), pa.int64()),
        }
        for metric in metrics:
            columns[metric] = pa.array(
                [float(c["metrics"][metric]) for c in checkpoints], pa.float64()
            )
        for g in range(len(vectors[0])):
            columns[group_column(g)] = pa.array(
                [np.asarray(v[g], dtype=np.float32) for v in vectors], pa.list_(pa.float32())
            )
        path = self.folder / f"{meta['concept_id']}.parquet"
        with atomic_file(path) as tmp:
            pq.write_table(pa.table(columns), tmp)
        return path

    def parquet_files(self) -> list[Path]:
        return sorted(self.folder.glob("c*.parquet"))

    def read(self, splits: list[str] | None = None, with_vectors: bool = True) -> pd.DataFrame:
        """All checkpoint rows (optionally only some splits), sorted by concept and checkpoint.
        Without ``with_vectors``: every column but the group vectors (ids, text, split, step and
        the metrics the family stores)."""
        files = self.parquet_files()
        if not files:
            raise FileNotFoundError(
                f"no concept weights under {self.folder}; make them with `wgen collect --out <run folder>`"
            )
        tables = []
        for path in files:
            names = pq.read_schema(path).names
            columns = None if with_vectors else [c for c in names if not _GROUP.fullmatch(c)]
            tables.append(pq.read_table(path, columns=columns).to_pandas())
        frame = pd.concat(tables, ignore_index=True)
        if splits is not None:
            frame = frame[frame["split"].isin(splits)]
        return frame.sort_values(["concept_id", "checkpoint"], kind="stable").reset_index(drop=True)


def checkpoint_state(row: pd.Series, manifest: Manifest, base_fingerprint: str) -> dict:
    """One checkpoint row → the trainable state dict (LoRA + norms) for a base generator.

    Refuses weights collected on another base generator: its fingerprint must match.
    """
    check_compatible(manifest, base_fingerprint)
    columns = [group_column(g) for g in range(len(manifest.groups))]
    return unflatten([np.asarray(row[c], dtype=np.float32) for c in columns], manifest)
