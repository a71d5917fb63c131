"""p-diff's zoo plan and the checks that run before Ray starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from wgen.cli import app
from wgen.config import load_config
from wgen.pdiff.data import PdiffError, load_images
from wgen.pdiff.zoo import check_settings, plan_shards


@pytest.fixture(scope="module")
def digits():
    return load_images(load_config("tiny").pdiff)


def test_a_selection_spec_that_matches_no_parameter_is_a_one_line_error(digits):
    config = load_config("tiny", [r"pdiff.convnet_select=^nothing\."])
    with pytest.raises(PdiffError) as err:
        check_settings(config, digits)
    message = str(err.value)
    assert "\n" not in message
    assert "pdiff.convnet_select" in message and "norm3.weight" in message


def test_the_command_line_refuses_it_before_ray_starts(tmp_path):
    result = CliRunner().invoke(
        app, ["pdiff", "--preset", "tiny", "--set", "pdiff.mlp_select=^fc9", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "pdiff.mlp_select" in result.output and "fc1.weight" in result.output
    assert not (tmp_path / "pdiff").exists()  # nothing started


def test_an_unknown_setting_is_refused(digits):
    with pytest.raises(PdiffError, match="valid"):
        check_settings(load_config("tiny", ["pdiff.settings=resnet"]), digits)


@pytest.mark.parametrize("checkpoints", [1, 7, 200])
def test_every_seed_is_in_exactly_one_shard(checkpoints):
    config = load_config("demo", [f"pdiff.checkpoints={checkpoints}"])
    mlp = plan_shards(config.pdiff, "mlp")
    assert sorted(i for s in mlp for i in s.indices) == list(range(checkpoints))
    assert len({s.name for s in mlp}) == len(mlp)
    (convnet,) = plan_shards(config.pdiff, "convnet")  # one run: its steps are the checkpoints
    assert len(convnet.indices) == checkpoints


def test_digits_split_is_stratified_and_seeded(digits):
    again = load_images(load_config("tiny").pdiff)
    assert (digits.y_heldout == again.y_heldout).all()
    assert len(digits.y_train) + len(digits.y_heldout) == 1797
    assert digits.x_train.shape[1:] == (1, 8, 8) and digits.spec.classes == 10
