from typer.testing import CliRunner

from wgen.cli import app
from wgen.config import load_config


def test_concepts_prints_split_tab_text_for_every_concept():
    result = CliRunner().invoke(app, ["concepts", "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    data = load_config("tiny").data
    assert len(lines) == data.n_train_concepts + data.n_val_concepts + data.n_heldout_concepts
    splits = [line.split("\t")[0] for line in lines]
    assert set(splits) == {"train", "val", "heldout"}
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1] for line in lines)


def test_bad_preset_and_wrong_type_exit_with_a_message():
    runner = CliRunner()
    result = runner.invoke(app, ["concepts", "--preset", "huge"])
    assert result.exit_code == 2 and "valid presets" in result.output
    result = runner.invoke(app, ["concepts", "--set", "data.seed=abc"])
    assert result.exit_code == 2 and "data.seed: expected an integer" in result.output


def test_impossible_concept_counts_are_explained():
    result = CliRunner().invoke(app, ["concepts", "--set", "data.n_train_concepts=100000"])
    assert result.exit_code == 2
    assert "at most" in result.output
