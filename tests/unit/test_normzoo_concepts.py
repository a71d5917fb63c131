"""The classifier zoo's concepts: class subsets, their texts, splits and concept file."""

from __future__ import annotations

import pytest

from wgen.core.errors import ConfigError
from wgen.data.pairs import load_concepts as load_gan_concepts
from wgen.normzoo.concepts import load_concepts, plan_concepts, save_concepts, subset_text


@pytest.mark.parametrize(
    ("classes", "text"),
    [((4,), "digit 4"), ((5, 2), "digits 2 and 5"), ((7, 2, 5), "digits 2, 5 and 7")],
)
def test_a_subset_is_named_in_sorted_order(classes, text):
    assert subset_text(classes) == text


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_the_plan_has_distinct_subsets_whose_classes_training_covers(seed):
    concepts = plan_concepts(10, 3, n_train=6, n_val=2, n_heldout=3, seed=seed)
    assert [c.split for c in concepts] == ["train"] * 6 + ["val"] * 2 + ["heldout"] * 3
    assert len({c.classes for c in concepts}) == len(concepts)
    assert all(len(c.classes) == 3 and c.id.startswith("c") for c in concepts)
    # 6 subsets of 3 can cover the ten classes, and the planner covers them first
    assert {k for c in concepts if c.split == "train" for k in c.classes} == set(range(10))
    assert concepts == plan_concepts(10, 3, 6, 2, 3, seed)  # seeded


def test_more_concepts_than_subsets_is_a_one_line_error():
    with pytest.raises(ConfigError, match="subsets"):
        plan_concepts(4, 2, n_train=5, n_val=1, n_heldout=1, seed=0)  # C(4, 2) = 6 < 7


def test_the_concept_file_round_trips_and_reads_as_wgen_concepts(tmp_path):
    concepts = plan_concepts(10, 3, 4, 1, 1, seed=0)
    save_concepts(concepts, tmp_path / "concepts.jsonl")
    assert load_concepts(tmp_path / "concepts.jsonl") == concepts
    gan_view = load_gan_concepts(tmp_path / "concepts.jsonl")
    assert [(c.id, c.text, c.split) for c in gan_view] == [
        (c.id, c.text, c.split) for c in concepts
    ]
    assert gan_view[-1].kind == "combination"


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--train-concepts", "0"], "train_concepts"), (["--heldout-fraction", "1.5"], "heldout")],
)
def test_the_zoo_command_refuses_bad_settings_in_one_line_before_anything_runs(
    tmp_path, capsys, flags, named
):
    from wgen.normzoo.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "zoo"), *flags])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert named in error and "\n" not in error
    assert not (tmp_path / "zoo").exists()
