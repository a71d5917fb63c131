"""Weight rows → normalised block samples, training-split statistics, the text cache."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from wgen.blockdata import (
    BlockData,
    cut_rows,
    cut_rows_batch,
    fit_stats,
    load_block_data,
    row_vectors,
)
from wgen.blocks import BlockLayout, from_blocks
from wgen.textcache import cached_embeddings, encoder_slug, text_cache_path
from wgen.weightformat import Selection, build_manifest
from wgen.weightstore import WeightStore

SHAPES = {"a.lora_A.weight": (3, 4), "a.lora_B.weight": (5, 3), "n.weight": (7,)}
ENCODER = "counting-encoder"


class CountingEncoder:
    """A deterministic stand-in for τ that counts the texts it had to embed."""

    name = ENCODER
    dim = 6

    def __init__(self) -> None:
        self.calls: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += texts
        rng = [np.random.default_rng(sum(map(ord, t))) for t in texts]
        return np.stack([r.standard_normal(self.dim).astype(np.float32) for r in rng])


def manifest():
    state = {k: torch.zeros(s) for k, s in SHAPES.items()}
    return build_manifest(state, Selection(), fingerprint="base-0")


def write_store(out, concepts: dict[str, tuple[str, str]], k: int = 2, seed: int = 0):
    """A weight dataset with k checkpoints for each {concept_id: (text, split)}; group g of
    a train concept is offset by 10·g and val concepts by 100, so the split is visible."""
    store = WeightStore(out)
    m = manifest()
    store.save_manifest(m)
    rng = np.random.default_rng(seed)
    for cid, (text, split) in concepts.items():
        offset = 100.0 if split == "val" else 0.0
        vectors = [
            [
                rng.standard_normal(n).astype(np.float32) + 10 * g + offset
                for g, n in enumerate(m.group_lengths)
            ]
            for _ in range(k)
        ]
        checkpoints = [
            {"step": 10 * i, "metrics": {"l1": 0.1, "psnr": 20.0, "fd": 1.0}} for i in range(k)
        ]
        meta = {"concept_id": cid, "concept_text": text, "split": split, "converged_step": 5}
        store.write_concept(meta, checkpoints, vectors)
    return store


CONCEPTS = {"c0": ("warm tone", "train"), "c1": ("pencil sketch", "train"), "c2": ("sepia", "val")}


@pytest.mark.parametrize("b", [1, 4, 8, 64])
def test_cut_rows_gives_one_normalised_sample_per_block(tmp_path, b):
    store = write_store(tmp_path, CONCEPTS)
    frame = store.read()
    layout = BlockLayout.from_lengths(manifest().group_lengths, b)
    stats = fit_stats(frame, layout)
    vectors = row_vectors(frame, len(layout.lengths))
    index = {"c0": 0, "c1": 1, "c2": 2}
    samples = cut_rows(frame["concept_id"].to_numpy(), vectors, layout, stats, index)
    rows, n = len(frame), layout.n_blocks
    assert samples["x"].shape == samples["mask"].shape == (rows * n, b)
    assert samples["x"].dtype == np.float32 and samples["mask"].dtype == bool
    np.testing.assert_array_equal(samples["n"], np.tile(np.arange(n), rows))
    np.testing.assert_array_equal(
        samples["concept"], np.repeat([index[c] for c in frame["concept_id"]], n)
    )
    assert not samples["x"][~samples["mask"]].any(), "padding carries no values"
    # Un-normalising the samples of one row gives that row back exactly (up to float32).
    first = stats.denormalise(samples["x"][:n], layout.mask())
    for original, restored in zip(vectors[0], from_blocks(first, layout), strict=True):
        np.testing.assert_allclose(restored, original, rtol=1e-5, atol=1e-4)


def test_the_arrow_batch_adapter_matches_the_pure_function(tmp_path):
    store = write_store(tmp_path, CONCEPTS)
    frame = store.read()
    layout = BlockLayout.from_lengths(manifest().group_lengths, 4)
    stats = fit_stats(frame, layout)
    index = {"c0": 0, "c1": 1, "c2": 2}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    from_arrow = cut_rows_batch(table, layout, stats, index)
    vectors = row_vectors(frame, len(layout.lengths))
    direct = cut_rows(frame["concept_id"].to_numpy(), vectors, layout, stats, index)
    for name in direct:
        np.testing.assert_array_equal(from_arrow[name], direct[name])


def test_unknown_concept_is_an_error(tmp_path):
    store = write_store(tmp_path, {"c0": ("warm", "train")})
    frame = store.read()
    layout = BlockLayout.from_lengths(manifest().group_lengths, 4)
    vectors = row_vectors(frame, len(layout.lengths))
    with pytest.raises(KeyError, match="c0"):
        cut_rows(frame["concept_id"].to_numpy(), vectors, layout, fit_stats(frame, layout), {})


def test_block_data_fits_statistics_on_the_training_split_only(tmp_path):
    write_store(tmp_path, CONCEPTS)
    cached_embeddings(tmp_path, ENCODER, [t for t, _ in CONCEPTS.values()], CountingEncoder())
    data = load_block_data(tmp_path, 4, ENCODER)
    train_only = fit_stats(WeightStore(tmp_path).read(splits=["train"]), data.layout)
    np.testing.assert_array_equal(data.stats.mean, train_only.mean)
    assert data.stats.mean.max() < 50, "validation rows (offset by 100) leaked into the statistics"
    assert data.rows == {"train": 4, "val": 2}
    assert data.blocks("train") == 4 * data.layout.n_blocks
    assert [len(f) for f in (data.files["train"], data.files["val"])] == [2, 1]
    assert data.embeddings.shape == (3, CountingEncoder.dim) and data.text_dim == 6
    # The plain-dict form for train_loop_config rebuilds the same tables.
    again = BlockData.from_dict(data.to_dict())
    assert again.layout == data.layout and again.concept_index == data.concept_index
    np.testing.assert_array_equal(again.embeddings, data.embeddings)
    np.testing.assert_array_equal(again.stats.std, data.stats.std)


def test_block_data_needs_training_concepts(tmp_path):
    write_store(tmp_path, {"c2": ("sepia", "val")})
    with pytest.raises(ValueError, match="no training-split"):
        load_block_data(tmp_path, 4, ENCODER)


def test_text_cache_embeds_each_text_once(tmp_path):
    encoder = CountingEncoder()
    first = cached_embeddings(tmp_path, ENCODER, ["a", "b", "a"], encoder)
    assert encoder.calls == ["a", "b"] and set(first) == {"a", "b"}
    again = cached_embeddings(tmp_path, ENCODER, ["b", "c"], encoder)
    assert encoder.calls == ["a", "b", "c"], "only the new text is embedded"
    np.testing.assert_array_equal(again["b"], first["b"])
    assert text_cache_path(tmp_path, ENCODER).parent == tmp_path / "weights" / "text"
    with pytest.raises(ValueError, match="empty"):
        cached_embeddings(tmp_path, ENCODER, [" "], encoder)


def test_the_text_cache_is_not_read_as_a_concept_file(tmp_path):
    store = write_store(tmp_path, CONCEPTS)
    cached_embeddings(tmp_path, ENCODER, ["x"], CountingEncoder())
    assert [p.stem for p in store.parquet_files()] == ["c0", "c1", "c2"]


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("minilm", "minilm"),
        ("openai/clip-vit-large-patch14", "openai-clip-vit-large-patch14"),
        ("/m/CLIP ", "m-clip"),
    ],
)
def test_encoder_slug(name, slug):
    assert encoder_slug(name) == slug
