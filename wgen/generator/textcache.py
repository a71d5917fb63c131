"""Concept embeddings τ(T), computed once per (text encoder, concept text) and kept on disk.

The text encoder is frozen, so an embedding never changes: it is computed the first time a
concept text is seen and read back from ``<out>/text/<encoder-slug>.parquet`` (one
row per text: ``text``, ``embedding`` list<float32>) ever after. Training, the quality
probe, the nearest-concept baseline and Ray Tune trials all read the same file, so the
encoder (seconds to load) runs at most once per new text and never inside a training loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wgen.core.runtime import atomic_file
from wgen.generator.text import TextEncoder, build_text_encoder, embed_concepts

TEXT_DIR = "text"  # <out>/text/<encoder>.parquet, beside (not inside) the weight dataset


def encoder_slug(name: str) -> str:
    """A file-name-safe form of an encoder name or folder ("minilm", "openai-clip-vit-...")."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    if not slug:
        raise ValueError(f"text encoder name {name!r} is empty")
    return slug


def text_cache_path(out: str | Path, encoder_name: str, view: str = "pooled") -> Path:
    """``<out>/text/<slug>.parquet`` for pooled vectors, ``<slug>.tokens.parquet`` for token states."""
    suffix = "" if view == "pooled" else f".{view}"
    return Path(out) / TEXT_DIR / f"{encoder_slug(encoder_name)}{suffix}.parquet"


def read_text_cache(path: Path) -> dict[str, np.ndarray]:
    """{text: float32 array} from a cache file; an absent file is an empty cache.

    Each row keeps its array flat with its shape beside it (`shape`: [dim] for a pooled
    vector, [tokens, dim] for token states).
    """
    if not path.exists():
        return {}
    table = pq.read_table(path)
    texts = table.column("text").to_pylist()
    vectors = table.column("embedding").to_pylist()
    shapes = (
        table.column("shape").to_pylist()
        if "shape" in table.column_names
        else [[len(v)] for v in vectors]
    )
    return {
        t: np.asarray(v, dtype=np.float32).reshape(shape)
        for t, v, shape in zip(texts, vectors, shapes, strict=True)
    }


def write_text_cache(path: Path, embeddings: dict[str, np.ndarray]) -> None:
    """Replace the cache file atomically (a reader never sees half a file)."""
    texts = sorted(embeddings)
    table = pa.table(
        {
            "text": pa.array(texts, pa.string()),
            "embedding": pa.array(
                [np.asarray(embeddings[t], dtype=np.float32).reshape(-1) for t in texts],
                pa.list_(pa.float32()),
            ),
            "shape": pa.array([list(np.shape(embeddings[t])) for t in texts], pa.list_(pa.int32())),
        }
    )
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


def cached_embeddings(
    out: str | Path,
    encoder_name: str,
    texts: Iterable[str],
    encoder: TextEncoder | None = None,
    view: str = "pooled",
) -> dict[str, np.ndarray]:
    """τ(T) for every text (``view``: "pooled" vectors or "tokens" states), from the cache;
    missing texts are embedded once and added.

    The encoder is built only when some text is missing (pass ``encoder`` to reuse one).
    """
    path = text_cache_path(out, encoder_name, view)
    cache = read_text_cache(path)
    wanted = list(dict.fromkeys(texts))
    missing = [t for t in wanted if t not in cache]
    if missing:
        encoder = encoder or build_text_encoder(encoder_name)
        cache.update(embed_concepts(encoder, missing, view))
        write_text_cache(path, cache)
    return {t: cache[t] for t in wanted}
