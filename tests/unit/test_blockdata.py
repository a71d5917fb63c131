"""Weight rows → normalised block samples, training-split statistics, the text cache."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from wgen.config import load_config
from wgen.data.concepts import coverage_first, make_concepts
from wgen.data.pairs import CONCEPTS_FILE, save_concepts
from wgen.generator.dataset import (
    BlockData,
    cut_rows,
    cut_rows_batch,
    load_block_data,
    row_vectors,
)
from wgen.generator.textcache import cached_embeddings, encoder_slug, text_cache_path
from wgen.weights.blocks import BlockLayout
from wgen.weights.codec import BlockCodec
from wgen.weights.format import Selection, build_manifest
from wgen.weights.store import WeightStore

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


def codec_of(frame, b: int, center: bool = True) -> BlockCodec:
    layout = BlockLayout.from_lengths(manifest().group_lengths, b)
    return BlockCodec.fit(row_vectors(frame, len(layout.lengths)), layout, center)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("b", [1, 4, 8, 64])
def test_the_codec_round_trip_is_exact_up_to_float32(tmp_path, b, center):
    frame = write_store(tmp_path, CONCEPTS).read()
    codec = codec_of(frame[frame["split"] == "train"], b, center)
    rows = row_vectors(frame, 2)
    blocks, mask = codec.encode(rows)
    assert blocks.shape == (len(rows), codec.layout.n_blocks, b) and blocks.dtype == np.float32
    assert not blocks[:, ~mask].any(), "padding carries no values"
    for row, encoded in zip(rows, blocks, strict=True):
        for original, restored in zip(row, codec.decode(encoded), strict=True):
            np.testing.assert_allclose(restored, original, rtol=1e-5, atol=1e-4)
    # Centred, the mean training row encodes to zeros: "predict 0" is the mean checkpoint.
    train = row_vectors(frame[frame["split"] == "train"], 2)
    mean_row = [np.mean([r[g] for r in train], axis=0) for g in range(2)]
    if center:
        assert np.abs(codec.encode([mean_row])[0]).max() < 1e-4
    else:
        assert not codec.center.any()


def test_cut_rows_gives_one_sample_per_block(tmp_path):
    frame = write_store(tmp_path, CONCEPTS).read()
    codec = codec_of(frame, 4)
    index = {"c0": 0, "c1": 1, "c2": 2}
    samples = cut_rows(frame["concept_id"].to_numpy(), row_vectors(frame, 2), codec, index)
    rows, n = len(frame), codec.layout.n_blocks
    assert samples["x"].shape == samples["mask"].shape == (rows * n, 4)
    assert samples["mask"].dtype == bool
    np.testing.assert_array_equal(samples["n"], np.tile(np.arange(n), rows))
    expected = np.repeat([index[c] for c in frame["concept_id"]], n)
    np.testing.assert_array_equal(samples["concept"], expected)
    np.testing.assert_array_equal(samples["x"][:n], codec.encode(row_vectors(frame, 2)[:1])[0][0])


def test_the_arrow_batch_adapter_matches_the_pure_function(tmp_path):
    frame = write_store(tmp_path, CONCEPTS).read()
    codec = codec_of(frame, 4)
    index = {"c0": 0, "c1": 1, "c2": 2}
    table = pa.Table.from_pandas(frame, preserve_index=False)
    from_arrow = cut_rows_batch(table, codec, index)
    direct = cut_rows(frame["concept_id"].to_numpy(), row_vectors(frame, 2), codec, index)
    for name in direct:
        np.testing.assert_array_equal(from_arrow[name], direct[name])


def test_unknown_concept_is_an_error(tmp_path):
    frame = write_store(tmp_path, {"c0": ("warm", "train")}).read()
    with pytest.raises(KeyError, match="c0"):
        cut_rows(frame["concept_id"].to_numpy(), row_vectors(frame, 2), codec_of(frame, 4), {})


def test_a_codec_for_another_block_size_is_refused(tmp_path):
    frame = write_store(tmp_path, CONCEPTS).read()
    arrays = codec_of(frame, 4).to_dict()
    with pytest.raises(ValueError, match="b=8"):
        BlockCodec.from_dict(arrays, BlockLayout.from_lengths(manifest().group_lengths, 8))


def test_block_data_fits_the_codec_on_the_training_split_only(tmp_path):
    store = write_store(tmp_path, CONCEPTS)
    cached_embeddings(tmp_path, ENCODER, [t for t, _ in CONCEPTS.values()], CountingEncoder())
    data = load_block_data(tmp_path, 4, ENCODER)
    train_only = codec_of(store.read(splits=["train"]), 4)
    np.testing.assert_array_equal(data.codec.center, train_only.center)
    np.testing.assert_array_equal(data.codec.stats.std, train_only.stats.std)
    assert data.codec.center.max() < 50, "validation rows (offset by 100) leaked into the centre"
    assert data.rows == {"train": 4, "val": 2}
    assert data.blocks("train") == 4 * data.layout.n_blocks
    assert [len(f) for f in (data.files["train"], data.files["val"])] == [2, 1]
    assert data.embeddings.shape == (3, CountingEncoder.dim) and data.text_dim == 6
    # The plain-dict form for train_loop_config rebuilds the same tables.
    again = BlockData.from_dict(data.to_dict())
    assert again.layout == data.layout and again.concept_index == data.concept_index
    np.testing.assert_array_equal(again.embeddings, data.embeddings)
    np.testing.assert_array_equal(again.codec.center, data.codec.center)


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
    assert text_cache_path(tmp_path, ENCODER).parent == tmp_path / "text"
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


def test_a_codec_with_read_only_arrays_decodes_without_a_warning():
    """A codec that came through Ray's object store holds read-only arrays; torch warns on
    those once per process, in every Ray Train worker's log."""
    import warnings

    import torch

    from wgen.weights.blocks import BlockLayout
    from wgen.weights.codec import BlockCodec

    layout = BlockLayout.from_lengths([100, 30], 16)
    rng = np.random.default_rng(0)
    rows = [[rng.standard_normal(n).astype(np.float32) for n in (100, 30)] for _ in range(3)]
    codec = BlockCodec.fit(rows, layout, center=True)
    for array in (codec.stats.std, codec.stats.mean, codec.center):
        array.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert codec.decode_tensor(torch.zeros(layout.n_blocks, 16)).shape == (130,)


def test_max_train_concepts_keeps_validation_and_the_coverage_first_subset(tmp_path):
    concepts = make_concepts(load_config("tiny").data)
    train = [c for c in concepts if c.split == "train"][:4]
    val = [c for c in concepts if c.split == "val"][:1]
    save_concepts(concepts, tmp_path / CONCEPTS_FILE)
    store = write_store(tmp_path, {c.id: (c.text, c.split) for c in train + val})
    cached_embeddings(tmp_path, ENCODER, [c.text for c in train + val], CountingEncoder())
    data = load_block_data(tmp_path, 4, ENCODER, max_train_concepts=2)
    kept = list(data.concepts_of("train")["concept_id"])
    assert kept == sorted(c.id for c in coverage_first(train, 2, val, vocabulary=train))
    assert data.rows == {"train": 4, "val": 2} and len(data.files["train"]) == 2
    subset = codec_of(store.read(splits=["train"]).query("concept_id in @kept"), 4)
    np.testing.assert_array_equal(data.codec.center, subset.center)
    assert len(load_block_data(tmp_path, 4, ENCODER).concepts_of("train")) == 4


def test_the_text_baselines_fit_on_the_generators_training_subset(tmp_path):
    """A learning-curve generator (train.max_train_concepts) is scored against baselines that
    saw the same concepts."""
    from wgen.bench.methods import BaselineRecipe, Baselines

    concepts = make_concepts(load_config("tiny").data)
    train = [c for c in concepts if c.split == "train"][:4]
    val = [c for c in concepts if c.split == "val"][:1]
    save_concepts(concepts, tmp_path / CONCEPTS_FILE)
    write_store(tmp_path, {c.id: (c.text, c.split) for c in train + val})
    cached_embeddings(tmp_path, ENCODER, [c.text for c in train + val], CountingEncoder())
    subset = sorted(c.id for c in coverage_first(train, 2, val, vocabulary=train))
    for limit, expected in ((2, subset), (None, sorted(c.id for c in train))):
        config = load_config("tiny", [f"train.max_train_concepts={limit or 'null'}"])
        config.train.text_encoder = ENCODER
        recipe = BaselineRecipe(0, limit, hyper_epochs=0, hyper_lr_schedule="constant")
        fitted = Baselines.fit(tmp_path, config, base=None, methods=["ridge"], recipe=recipe)
        assert fitted.data.concept_ids == expected
        assert fitted.checkpoint_concepts == [c for c in expected for _ in range(2)]
