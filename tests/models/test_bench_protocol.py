"""The bench's protocol on a tiny GAN, without Ray: the rule and the restoring of the best
model read only the selection pairs, and the converged quality is the restored model's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.models.test_gan_training import tiny_config, tiny_pairs
from wgen.bench.stage import ProbeL1, bench_monitor, bench_rule, bench_split
from wgen.core.runtime import torch_threads
from wgen.gan.metrics import build_feature_extractor, generate_uint8, paired_l1
from wgen.gan.training import train_base, train_lora


@pytest.fixture(scope="module")
def setting():
    with torch_threads(1):
        config = tiny_config()
        config.bench = dataclasses.replace(
            config.bench, eval_every=5, window_steps=10, max_steps=40, selection_pairs=2
        )
        pairs = tiny_pairs("c0001", n=14)
        yield bench_rule(config), pairs, train_base(config.gan, config.data.seed, [pairs])


def fine_tune(setting, test_targets=None):
    config, pairs, base = setting
    split = bench_split(pairs, config.bench.selection_pairs)
    targets = split.test_targets if test_targets is None else test_targets
    probe = ProbeL1(
        split.fitting, config.bench.eval_every, set(), test=(split.test_sources, targets)
    )
    with torch_threads(1):
        run = train_lora(
            base,
            config,
            split.fitting,
            build_feature_extractor("offline"),
            k_checkpoints=0,
            seed=3,
            evaluate=probe,
            monitor=bench_monitor(config.bench),
        )
    return run, probe, split


def test_the_three_splits_are_disjoint_and_the_test_pairs_are_the_held_back_ones(setting):
    _, pairs, _ = setting
    split = bench_split(pairs, 2)
    assert len(split.fitting.train_sources) == len(pairs.train_sources) - 2
    assert np.array_equal(split.fitting.eval_sources, pairs.train_sources[-2:])
    assert np.array_equal(split.test_sources, pairs.eval_sources)
    with pytest.raises(ValueError, match="leaves none to train on"):
        bench_split(pairs, len(pairs.train_sources))


def test_poisoned_test_pairs_change_no_stopping_and_no_selection(setting):
    clean, clean_probe, split = fine_tune(setting)
    rng = np.random.default_rng(1)
    poison = rng.integers(0, 256, split.test_targets.shape, dtype=np.uint8)
    poisoned, poisoned_probe, _ = fine_tune(setting, test_targets=poison)
    # the rule and the restore read the selection pairs only: the same run, step for step
    assert [h["l1"] for h in clean.history] == [h["l1"] for h in poisoned.history]
    assert clean.converged_step == poisoned.converged_step
    assert clean.restored_step == poisoned.restored_step
    # ...while what the report reads did change (the poison reached the test column)
    assert [h["test_l1"] for h in clean.history] != [h["test_l1"] for h in poisoned.history]


def test_the_run_ends_with_its_best_selection_model_and_that_is_what_is_scored(setting):
    run, probe, split = fine_tune(setting)
    assert run.restored_step is not None
    best = min(run.history, key=lambda h: h["l1"])  # smooth = 1 in the tiny preset
    assert run.restored_step == best["step"]
    # the model the probe holds now is the restored one: its test L1 is the one recorded at
    # the best step, not the one at the step where the run stopped
    restored = paired_l1(generate_uint8(probe.generator, split.test_sources), split.test_targets)
    assert restored == pytest.approx(best["test_l1"], abs=1e-6)
    if run.history[-1]["step"] != best["step"]:
        assert restored != pytest.approx(run.history[-1]["test_l1"], abs=1e-9)
