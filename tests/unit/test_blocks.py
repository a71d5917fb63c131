"""Block layout, cutting, the exact inverse, and per-block-index normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from wgen.weights.blocks import BlockLayout, BlockStats, from_blocks, rows_to_blocks, to_blocks

LENGTHS = [48, 5, 130, 64, 1]


def random_row(lengths: list[int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal(length).astype(np.float32) * (g + 1) for g, length in enumerate(lengths)
    ]


@pytest.mark.parametrize("b", [1, 3, 7, 16, 64, 256])
def test_round_trip_is_bit_exact(b: int) -> None:
    layout = BlockLayout.from_lengths(LENGTHS, b)
    row = random_row(LENGTHS, seed=b)
    blocks, mask = to_blocks(row, layout)
    assert blocks.shape == mask.shape == (layout.n_blocks, b)
    assert blocks.dtype == np.float32 and mask.dtype == bool
    back = from_blocks(blocks, layout)
    assert len(back) == len(row)
    for original, restored in zip(row, back, strict=True):
        assert restored.dtype == np.float32
        np.testing.assert_array_equal(original, restored)


@pytest.mark.parametrize("b", [1, 7, 64, 256])
def test_layout_counts_and_group_of_block(b: int) -> None:
    layout = BlockLayout.from_lengths(LENGTHS, b)
    expected = [-(-length // b) for length in LENGTHS]
    assert list(layout.blocks_per_group) == expected
    assert layout.n_blocks == sum(expected)
    assert list(layout.first_block) == list(np.cumsum([0] + expected[:-1]))
    groups = [g for g, count in enumerate(expected) for _ in range(count)]
    assert list(layout.group_of_block) == groups
    assert layout.total_values == sum(LENGTHS)


def test_mask_marks_only_the_padding_of_each_groups_last_block() -> None:
    b = 16
    layout = BlockLayout.from_lengths([20, 5, 32], b)  # blocks: 2 + 1 + 2
    row = [np.arange(1, 21, dtype=np.float32), np.full(5, 7, np.float32), np.ones(32, np.float32)]
    blocks, mask = to_blocks(row, layout)
    assert mask.shape == (5, b)
    assert mask[0].all() and mask[1, :4].all() and not mask[1, 4:].any()
    assert mask[2, :5].all() and not mask[2, 5:].any()  # a group shorter than b: one padded block
    assert mask[3:].all()  # 32 divides by 16: no padding
    assert (blocks[~mask] == 0).all()
    np.testing.assert_array_equal(blocks[1, :4], [17, 18, 19, 20])  # groups never share a block
    np.testing.assert_array_equal(blocks[2, :5], [7] * 5)


def test_rows_to_blocks_stacks_rows() -> None:
    layout = BlockLayout.from_lengths(LENGTHS, 16)
    rows = [random_row(LENGTHS, seed) for seed in range(3)]
    blocks, mask = rows_to_blocks(rows, layout)
    assert blocks.shape == (3, layout.n_blocks, 16)
    for r, row in enumerate(rows):
        np.testing.assert_array_equal(blocks[r], to_blocks(row, layout)[0])
    np.testing.assert_array_equal(mask, layout.mask())


def test_wrong_row_is_rejected_naming_the_group() -> None:
    layout = BlockLayout.from_lengths([4, 6], 4)
    with pytest.raises(ValueError, match="layer group 1"):
        to_blocks([np.zeros(4), np.zeros(5)], layout)
    with pytest.raises(ValueError, match="2 layer groups"):
        to_blocks([np.zeros(4)], layout)
    with pytest.raises(ValueError, match="block size"):
        BlockLayout.from_lengths([4], 0)


def test_stats_normalise_then_denormalise_is_identity() -> None:
    layout = BlockLayout.from_lengths(LENGTHS, 16)
    blocks, mask = rows_to_blocks([random_row(LENGTHS, seed) for seed in range(6)], layout)
    stats = BlockStats.fit(blocks, mask)
    normalised = stats.normalise(blocks, mask)
    assert (normalised[:, ~mask] == 0).all()  # padding stays empty
    restored = stats.denormalise(normalised, mask)
    np.testing.assert_allclose(restored, blocks, rtol=1e-5, atol=1e-5)
    # Each block index is standardised over the training rows' real values.
    for n in range(layout.n_blocks):
        values = normalised[:, n][:, mask[n]]
        assert abs(values.mean()) < 1e-4 and abs(values.std() - 1.0) < 1e-3


def test_stats_by_index_match_whole_rows() -> None:
    layout = BlockLayout.from_lengths(LENGTHS, 8)
    blocks, mask = rows_to_blocks([random_row(LENGTHS, seed) for seed in range(4)], layout)
    stats = BlockStats.fit(blocks, mask)
    index = np.array([3, 0, layout.n_blocks - 1])
    picked = stats.normalise(blocks[1, index], mask[index], index=index)
    np.testing.assert_array_equal(picked, stats.normalise(blocks[1], mask)[index])


def test_stats_come_from_training_rows_only() -> None:
    layout = BlockLayout.from_lengths([10, 3], 4)
    train, mask = rows_to_blocks([random_row([10, 3], seed) for seed in range(5)], layout)
    held_out = train[:1] * 1000.0 + 50.0  # wildly different rows must not move the statistics
    stats = BlockStats.fit(train, mask)
    manual_mean = [train[:, n][:, mask[n]].mean() for n in range(layout.n_blocks)]
    np.testing.assert_allclose(stats.mean, manual_mean, rtol=1e-5)
    refit = BlockStats.fit(np.concatenate([train, held_out]), mask)
    assert not np.allclose(refit.mean, stats.mean)


def test_std_floor_keeps_constant_blocks_finite() -> None:
    layout = BlockLayout.from_lengths([8], 4)
    blocks = np.zeros((3, 2, 4), dtype=np.float32)
    stats = BlockStats.fit(blocks, layout.mask(), min_std=1e-6)
    assert np.all(stats.std == np.float32(1e-6))
    assert np.isfinite(stats.normalise(blocks)).all()


def test_stats_save_load_and_dict_round_trip(tmp_path) -> None:
    layout = BlockLayout.from_lengths(LENGTHS, 16)
    blocks, mask = rows_to_blocks([random_row(LENGTHS, seed) for seed in range(3)], layout)
    stats = BlockStats.fit(blocks, mask)
    loaded = BlockStats.load(stats.save(tmp_path / "stats.safetensors"))
    again = BlockStats.from_dict(stats.to_dict())
    for other in (loaded, again):
        np.testing.assert_array_equal(other.mean, stats.mean)
        np.testing.assert_array_equal(other.std, stats.std)
