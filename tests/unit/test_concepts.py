"""Concept generation: counts, determinism, and the held-out properties the benchmark relies on."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from wgen.config import DataConfig, load_config
from wgen.data.concepts import (
    CATEGORIES,
    PRIMITIVES,
    STRENGTHS,
    TEMPLATES,
    Concept,
    coverage_first,
    make_concepts,
    max_concepts,
    select_for_collection,
    template_words,
    tokenize,
)

pytestmark = pytest.mark.timeout(30)

DEMO = DataConfig()
TINY = load_config("tiny").data


@pytest.fixture(scope="module")
def demo() -> list[Concept]:
    return make_concepts(DEMO)


def _split(concepts: list[Concept], split: str, kind: str | None = None) -> list[Concept]:
    return [c for c in concepts if c.split == split and (kind is None or c.kind == kind)]


def _names(concept: Concept) -> frozenset[str]:
    return frozenset(name for name, _ in concept.edits)


def _words(concepts: list[Concept]) -> set[str]:
    return {word for c in concepts for word in tokenize(c.text)}


def test_vocabulary_size() -> None:
    assert len(CATEGORIES) >= 3
    assert len(PRIMITIVES) >= 14
    assert {p.category for p in PRIMITIVES.values()} == set(CATEGORIES)
    assert len([t for t in TEMPLATES if not t.reserved]) >= 3
    assert max_concepts() > 1000


@pytest.mark.parametrize("cfg", [DEMO, TINY], ids=["demo", "tiny"])
def test_counts_ids_and_distinct_texts(cfg: DataConfig) -> None:
    concepts = make_concepts(cfg)
    assert len(_split(concepts, "train")) == cfg.n_train_concepts
    assert len(_split(concepts, "val")) == cfg.n_val_concepts
    assert len(_split(concepts, "heldout")) == cfg.n_heldout_concepts
    assert [c.id for c in concepts] == [f"c{i:04d}" for i in range(len(concepts))]
    assert len({c.text for c in concepts}) == len(concepts)
    for concept in concepts:
        assert 1 <= len(concept.edits) <= 3
        assert all(0 < strength <= 1 for _, strength in concept.edits)
        assert set(concept.category.split("+")) <= set(CATEGORIES)


def test_deterministic_and_seeded() -> None:
    assert make_concepts(DEMO) == make_concepts(DEMO)
    assert make_concepts(DEMO) != make_concepts(dataclasses.replace(DEMO, seed=1))


def test_same_concepts_in_another_process() -> None:
    """Ray workers regenerate concepts: set ordering (hash seeds) must not leak into them."""
    code = "from wgen.data.concepts import make_concepts; from wgen.config import DataConfig; "
    code += "print(repr([(c.text, c.edits) for c in make_concepts(DataConfig())]))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr([(c.text, c.edits) for c in make_concepts(DEMO)])


def test_train_programs_are_distinct_and_val_programs_new(demo: list[Concept]) -> None:
    train = [c.edits for c in _split(demo, "train")]
    val = [c.edits for c in _split(demo, "val")]
    assert len(set(train)) == len(train)
    assert not set(val) & set(train)
    seen = frozenset().union(*(_names(c) for c in _split(demo, "train")))
    assert all(_names(c) <= seen for c in _split(demo, "val"))


def test_heldout_is_half_combinations_half_paraphrases(demo: list[Concept]) -> None:
    heldout = _split(demo, "heldout")
    assert {c.kind for c in heldout} == {"combination", "paraphrase"}
    assert len(_split(demo, "heldout", "combination")) == DEMO.n_heldout_concepts // 2
    assert all(c.kind == "" for c in demo if c.split != "heldout")


@pytest.mark.parametrize("cfg", [DEMO, TINY], ids=["demo", "tiny"])
def test_unseen_combinations_are_unseen_but_their_primitives_are_seen(cfg: DataConfig) -> None:
    concepts = make_concepts(cfg)
    trained = [_names(c) for c in concepts if c.split in ("train", "val")]
    seen = frozenset().union(*(_names(c) for c in _split(concepts, "train")))
    combinations = _split(concepts, "heldout", "combination")
    assert combinations
    for concept in combinations:
        assert len(concept.edits) >= 2
        assert _names(concept) <= seen, concept
        assert not any(_names(concept) <= names for names in trained), concept


@pytest.mark.parametrize("cfg", [DEMO, TINY], ids=["demo", "tiny"])
def test_paraphrases_reword_a_training_edit_with_unseen_words(cfg: DataConfig) -> None:
    concepts = make_concepts(cfg)
    train = _split(concepts, "train")
    train_words = _words(train + _split(concepts, "val"))
    train_programs = {c.edits for c in train}
    paraphrases = _split(concepts, "heldout", "paraphrase")
    assert paraphrases
    for concept in paraphrases:
        assert concept.edits in train_programs
        assert set(tokenize(concept.text)) - train_words, concept.text


def test_every_reserved_wording_has_a_word_no_seen_wording_uses() -> None:
    """What makes 'unseen paraphrase' checkable word by word, whatever the seed."""
    seen_words = {
        w for t in TEMPLATES if not t.reserved for form in t.forms for w in tokenize(form)
    }
    reserved_phrases: list[str] = [" ".join(t.forms) for t in TEMPLATES if t.reserved]
    wordings = [w for p in PRIMITIVES.values() for w in (p.nouns, p.adjectives)]
    wordings += [w for level in STRENGTHS for w in (level.adjectives, level.adverbs)]
    for wording in wordings:
        seen_words.update(word for phrase in wording.seen for word in tokenize(phrase))
        reserved_phrases += wording.reserved
    for phrase in reserved_phrases:
        assert set(tokenize(phrase)) - seen_words - {"e0", "a0", "e1", "a1", "e2", "a2"}, phrase
    assert template_words() >= {"apply", "make", "it", "with", "and"}


def test_impossible_counts_say_the_maximum() -> None:
    with pytest.raises(ValueError, match=r"at most \d+"):
        make_concepts(dataclasses.replace(DEMO, n_train_concepts=max_concepts() + 1))
    with pytest.raises(ValueError, match=r"at most \d+ held-out"):
        make_concepts(dataclasses.replace(TINY, n_train_concepts=2, n_heldout_concepts=10))
    with pytest.raises(ValueError, match=r"at most \d+ combinations"):
        make_concepts(dataclasses.replace(DEMO, n_heldout_concepts=2000, n_train_concepts=1000))
    with pytest.raises(ValueError, match="must be ≥ 0"):
        make_concepts(dataclasses.replace(DEMO, n_val_concepts=-1))


def test_collection_covers_every_edit_of_its_validation_concepts(demo) -> None:
    chosen = select_for_collection(demo, 48)
    val = [c for c in chosen if c.split == "val"]
    train = [c for c in chosen if c.split == "train"]
    assert (len(val), len(train)) == (8, 40)
    covered = {edit for c in train for edit in c.edits}
    assert {edit for c in val for edit in c.edits} <= covered
    assert {name for c in demo for name, _ in c.edits} == {name for name, _ in covered}


def test_coverage_first_only_adds_concepts_as_n_grows(demo) -> None:
    train, val = _split(demo, "train"), _split(demo, "val")[:8]
    picks = [coverage_first(train, n, val, vocabulary=train) for n in (5, 20, 40, 80)]
    for smaller, larger in zip(picks, picks[1:], strict=False):
        assert {c.id for c in smaller} < {c.id for c in larger}
    assert [len(p) for p in picks] == [5, 20, 40, 80]
    # the greedy part comes first: 5 concepts already cover more validation edits than the
    # first 5 ids do
    wanted = {edit for c in val for edit in c.edits}

    def hits(concepts):
        return len(wanted & {e for c in concepts for e in c.edits})

    assert hits(picks[0]) > hits(train[:5])
