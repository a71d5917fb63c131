"""The base GAN trains as a Ray task (not in the driver) and gives the driver's result."""

from __future__ import annotations

import pytest
import torch

from wgen.collect.stage import train_base_on_ray
from wgen.config import load_config
from wgen.data.pairs import read_pairs, run_pairs
from wgen.gan.training import concept_pairs, train_base

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]


def test_base_gan_as_a_ray_task_equals_the_driver_for_a_fixed_seed(ray_local, tmp_path):
    config = load_config("tiny", ["gan.base_steps=5"])
    run_pairs(config, tmp_path)
    frame = read_pairs(tmp_path)
    ids = sorted(frame.loc[frame["split"] == "train", "concept_id"].unique())[:3]

    in_driver = train_base(
        config.gan,
        config.data.seed,
        concept_pairs(frame[frame["concept_id"].isin(ids)], config.collect),
    )
    as_task = train_base_on_ray(config, tmp_path, ids)

    assert as_task.info["device"] == "cpu" and as_task.info["concepts"] == ids
    assert as_task.fingerprint == in_driver.fingerprint
    for name in ("generator", "discriminator"):
        ours, theirs = getattr(as_task, name), getattr(in_driver, name)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
