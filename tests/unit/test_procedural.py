"""The procedural editor: parsing concept texts and the image effects of every primitive."""

from __future__ import annotations

import numpy as np
import pytest

from wgen.config import DataConfig, load_config
from wgen.data.concepts import MEDIUM, PRIMITIVES, STRONG, WEAK, make_concepts
from wgen.data.editors import build_editor
from wgen.data.editors.procedural import (
    EFFECTS,
    ProceduralEditor,
    UnknownWordsError,
    apply_edits,
    describe_vocabulary,
    parse_edit,
)

pytestmark = pytest.mark.timeout(30)


def _photo_like(size: int, n: int = 2, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with a few edges and mild noise: a stand-in for a photo crop."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    images = []
    for _ in range(n):
        phase = rng.uniform(0, 2 * np.pi, 3)
        channels = [0.5 + 0.45 * np.sin(3 * xx + 2 * yy + p) for p in phase]
        image = np.stack(channels, axis=-1)
        image[size // 3 : size // 2, size // 4 :] *= 0.4  # a dark bar: an edge to find
        image += rng.normal(0, 0.02, image.shape)
        images.append(np.clip(image * 255, 0, 255))
    return np.rint(np.stack(images)).astype(np.uint8)


def _change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


# -- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [DataConfig(), load_config("tiny").data], ids=["demo", "tiny"])
def test_every_generated_text_parses_back_to_its_edits(cfg: DataConfig) -> None:
    for concept in make_concepts(cfg):
        assert parse_edit(concept.text) == concept.edits, concept


@pytest.mark.parametrize(
    ("text", "edits"),
    [
        ("strong sepia tone with a soft vignette", (("sepia", STRONG), ("vignette", WEAK))),
        ("Make it very blurry, and slightly warmer!", (("blur", STRONG), ("warm", WEAK))),
        ("pixelation", (("pixelate", MEDIUM),)),
        ("a grey filter", (("grayscale", MEDIUM),)),  # spelling alias + filler word
        ("apply a color boost", (("saturate", MEDIUM),)),
        ("sepia effect", (("sepia", MEDIUM),)),
        ("tilt-shift blur then blur", (("tilt_shift", MEDIUM), ("blur", MEDIUM))),
    ],
)
def test_parser_reads_free_sentences(text: str, edits: tuple) -> None:
    assert parse_edit(text) == edits


def test_unknown_words_are_named_with_the_known_vocabulary() -> None:
    with pytest.raises(UnknownWordsError) as caught:
        parse_edit("apply a glittery sepia tone with sparkles")
    message = str(caught.value)
    assert caught.value.unknown == ("glittery", "sparkles")
    assert "'glittery'" in message and "'sparkles'" in message
    assert "sepia tone" in message and "vignette" in message and "slight" in message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "names no edit"),
        ("make it the", "names no edit"),
        ("apply a strong", "not followed by an edit"),
        ("slight strong blur", "in a row"),
    ],
)
def test_text_without_a_well_formed_edit_is_rejected(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_edit(text)


def test_describe_vocabulary_lists_categories_primitives_and_strengths() -> None:
    text = describe_vocabulary()
    for word in ("style", "colour", "local", "posterize", "vignette", "intense", "subtle"):
        assert word in text


# -- effects ------------------------------------------------------------------------------


def test_every_primitive_has_an_effect() -> None:
    assert set(EFFECTS) == set(PRIMITIVES)


@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_each_primitive_visibly_changes_the_image_deterministically(name: str, size: int) -> None:
    images = _photo_like(size)
    edited = apply_edits(images, [(name, WEAK)])
    assert edited.shape == images.shape and edited.dtype == np.uint8
    assert _change(edited, images) > 1.5, (
        f"{name} at the weakest strength barely changes a {size}px image"
    )
    np.testing.assert_array_equal(apply_edits(images, [(name, WEAK)]), edited)


@pytest.mark.parametrize("name", ["sepia", "blur", "vignette", "invert", "pixelate", "warm"])
def test_stronger_means_more_change(name: str) -> None:
    images = _photo_like(32)
    changes = [_change(apply_edits(images, [(name, s)]), images) for s in (WEAK, MEDIUM, STRONG)]
    assert changes[0] < changes[1] < changes[2], changes


def test_edits_compose_in_order() -> None:
    images = _photo_like(32)
    both = apply_edits(images, [("grayscale", STRONG), ("warm", STRONG)])
    chained = apply_edits(apply_edits(images, [("grayscale", STRONG)]), [("warm", STRONG)])
    # One call rounds to uint8 once, two calls twice: equal up to one grey level.
    np.testing.assert_allclose(both.astype(int), chained.astype(int), atol=1)
    assert not np.array_equal(both, apply_edits(images, [("warm", STRONG), ("grayscale", STRONG)]))


def test_edits_do_not_mix_images_of_a_batch() -> None:
    images = _photo_like(16, n=3)
    for name in PRIMITIVES:
        batch = apply_edits(images, [(name, STRONG)])
        alone = apply_edits(images[1:2], [(name, STRONG)])
        np.testing.assert_array_equal(batch[1:2], alone, err_msg=name)


@pytest.mark.parametrize(
    ("images", "edits", "match"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), [("blur", 0.5)], "uint8"),
        (np.zeros((8, 8, 3), np.uint8), [("blur", 0.5)], r"\(N, H, W, 3\)"),
        (np.zeros((1, 8, 8, 3), np.uint8), [("glitter", 0.5)], "unknown edit primitive"),
        (np.zeros((1, 8, 8, 3), np.uint8), [("blur", 1.5)], r"\(0, 1\]"),
    ],
)
def test_apply_edits_rejects_bad_input(images: np.ndarray, edits: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        apply_edits(images, edits)


# -- the editor -------------------------------------------------------------------------------


def test_editor_applies_one_text_per_image() -> None:
    images = _photo_like(16, n=3)
    texts = ["strong sepia tone", "make it slightly blurry", "strong sepia tone"]
    editor = build_editor(DataConfig())
    assert isinstance(editor, ProceduralEditor)
    edited = editor(images, texts)
    for i, text in enumerate(texts):
        np.testing.assert_array_equal(
            edited[i : i + 1], apply_edits(images[i : i + 1], parse_edit(text))
        )
    with pytest.raises(ValueError, match="one text per image"):
        editor(images, texts[:2])


def test_build_editor_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="procedural, instruct-pix2pix"):
        build_editor(DataConfig(editor="photoshop"))
