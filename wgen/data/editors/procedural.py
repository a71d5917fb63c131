"""The procedural editor: concept text → edit program → deterministic numpy image edits.

Offline, CPU-only and exactly reproducible, so the whole pipeline runs anywhere without a
diffusion model. The text is *parsed* (longest-match over the vocabulary's phrases in
:mod:`wgen.data.concepts`), not looked up, so any sentence built from known words works — the
generated concepts, held-out paraphrases, or a user's own ``--concepts`` file. Words it does
not know are rejected with the list of words it does know.

Effects work on float32 batches ``(N, H, W, 3)`` in [0, 255]; each is monotone in its
strength and sized relative to the image, so it stays visible at 16x16.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

from wgen.data.concepts import (
    CATEGORIES,
    FILLER_WORDS,
    MEDIUM,
    PRIMITIVES,
    STRENGTHS,
    TEMPLATES,
    Edits,
    template_words,
    tokenize,
)
from wgen.data.images import LUMA_BT601, check_images

# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------


class UnknownWordsError(ValueError):
    """A concept text with words the procedural editor cannot interpret."""

    def __init__(self, text: str, unknown: Sequence[str]):
        self.text = text
        self.unknown = tuple(unknown)
        super().__init__(
            f"cannot interpret {', '.join(repr(w) for w in self.unknown)} in {text!r}.\n"
            f"{describe_vocabulary()}"
        )


# A phrase (tuple of words) means an edit primitive, a strength, or nothing (filler).
_Meaning = tuple[str, str | float | None]


@functools.cache
def _phrase_table() -> dict[tuple[str, ...], _Meaning]:
    """Every known phrase → its meaning; fails loudly if the vocabulary is ambiguous."""
    table: dict[tuple[str, ...], _Meaning] = {}

    def add(phrase: str, meaning: _Meaning) -> None:
        key = tuple(tokenize(phrase))
        if key in table and table[key] != meaning:
            raise RuntimeError(
                f"vocabulary phrase {phrase!r} means both {table[key]} and {meaning}"
            )
        table[key] = meaning

    for primitive in PRIMITIVES.values():
        for phrase in primitive.nouns.all() + primitive.adjectives.all():
            add(phrase, ("edit", primitive.name))
    for level in STRENGTHS:
        for word in level.adjectives.all() + level.adverbs.all():
            if word:
                add(word, ("strength", level.value))
    for word in sorted(template_words() | set(FILLER_WORDS)):
        if (word,) not in table:  # a filler word may also be a whole phrase; the phrase wins
            add(word, ("filler", None))
    return table


@functools.cache
def _longest_phrase() -> int:
    return max(len(key) for key in _phrase_table())


def _match(tokens: list[str], start: int) -> tuple[int, _Meaning] | None:
    """The longest known phrase starting at ``tokens[start]``: (its length, its meaning)."""
    table = _phrase_table()
    for length in range(min(_longest_phrase(), len(tokens) - start), 0, -1):
        meaning = table.get(tuple(tokens[start : start + length]))
        if meaning is not None:
            return length, meaning
    return None


def parse_edit(text: str) -> Edits:
    """Read the edit program of a concept text: ``((primitive, strength), ...)`` in text order.

    A strength word qualifies the next edit phrase; an edit without one gets the medium
    strength. Raises :class:`UnknownWordsError` for unknown words and ``ValueError`` for
    text with no edit or a strength word that qualifies nothing.
    """
    tokens = tokenize(text)
    edits: list[tuple[str, float]] = []
    unknown: list[str] = []
    strength: tuple[str, float] | None = None  # (word, value) waiting for its edit
    i = 0
    while i < len(tokens):
        found = _match(tokens, i)
        if found is None:
            unknown.append(tokens[i])
            i += 1
            continue
        length, (role, value) = found
        words = " ".join(tokens[i : i + length])
        i += length
        if role == "strength":
            if strength is not None:
                raise ValueError(
                    f"{text!r}: strength words {strength[0]!r} and {words!r} in a row; use one per edit"
                )
            assert isinstance(value, float)
            strength = (words, value)
        elif role == "edit":
            edits.append((str(value), strength[1] if strength else MEDIUM))
            strength = None
    if unknown:
        raise UnknownWordsError(text, unknown)
    if strength is not None:
        raise ValueError(f"{text!r}: strength word {strength[0]!r} is not followed by an edit")
    if not edits:
        raise ValueError(
            f"{text!r} names no edit; name at least one of: {', '.join(PRIMITIVES)} "
            "(see describe_vocabulary())"
        )
    return tuple(edits)


def describe_vocabulary() -> str:
    """The words the procedural editor understands, grouped by category, for help and errors."""
    lines = ["Edits by category (any of the phrases names the edit):"]
    for category, description in CATEGORIES.items():
        lines.append(f"  {category} ({description}):")
        for primitive in PRIMITIVES.values():
            if primitive.category == category:
                phrases = primitive.nouns.all() + primitive.adjectives.all()
                lines.append(f"    {primitive.name}: {', '.join(dict.fromkeys(phrases))}")
    lines.append("Strength words (before an edit; none means medium):")
    for level in STRENGTHS:
        words = [w for w in level.adjectives.all() + level.adverbs.all() if w]
        lines.append(f"  {level.value:g}: {', '.join(words) if words else '(no word)'}")
    filler = sorted(template_words() | set(FILLER_WORDS))
    lines.append(f"Filler words (ignored): {', '.join(filler)}")
    examples = [
        t.forms[1].format(e0="sepia", a0="a sepia tone", e1="blurry", a1="a blur")
        for t in TEMPLATES
    ]
    lines.append(f"Examples: {'; '.join(examples[:3])}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Effects: float32 (N, H, W, 3) in [0, 255], strength s in (0, 1] → same shape
# ---------------------------------------------------------------------------------------

_LUMA = np.array(LUMA_BT601, dtype=np.float32)
_SEPIA = np.array(
    [[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float32
)
_SOBEL_Y = np.array([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]], dtype=np.float32)
_EMBOSS = np.array([[-2.0, -1.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 1.0, 2.0]], dtype=np.float32)

Effect = Callable[[np.ndarray, float], np.ndarray]


def _luma(x: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) → (N, H, W, 1) luminance, kept 4-D so it broadcasts against colour."""
    return (x @ _LUMA)[..., None]


def _lerp(a: np.ndarray, b: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    return a + (b - a) * t


def _side(x: np.ndarray) -> int:
    """The shorter image side: spatial effects scale with it so they read the same at any size."""
    return min(x.shape[1], x.shape[2])


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """Blur over the two spatial axes only (never across images of the batch or channels)."""
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect")


def _filter3x3(gray: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate (N, H, W, 1) with a 3x3 kernel per image."""
    return ndimage.correlate(gray, kernel[None, :, :, None], mode="nearest")


def _radius2(x: np.ndarray, cy: float = 0.0, cx: float = 0.0) -> np.ndarray:
    """Squared distance from (cy, cx) in coordinates where the image spans [-1, 1]: (1, H, W, 1)."""
    h, w = x.shape[1:3]
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    return ((yy - cy) ** 2 + (xx - cx) ** 2).astype(np.float32)[None, :, :, None]


def _pixelate_blocks(x: np.ndarray, block: int) -> np.ndarray:
    """Replace each block x block tile by its mean (edge tiles padded by repetition)."""
    n, h, w, c = x.shape
    padded = np.pad(x, ((0, 0), (0, -h % block), (0, -w % block), (0, 0)), mode="edge")
    ph, pw = padded.shape[1:3]
    means = padded.reshape(n, ph // block, block, pw // block, block, c).mean(axis=(2, 4))
    return np.repeat(np.repeat(means, block, axis=1), block, axis=2)[:, :h, :w]


def sepia(x: np.ndarray, s: float) -> np.ndarray:
    return _lerp(x, x @ _SEPIA.T, s)


def sketch(x: np.ndarray, s: float) -> np.ndarray:
    """Dark pencil lines where the luminance has edges, on white paper."""
    gray = _luma(x)
    # Sobel per image with explicit 3x3 kernels: ndimage.sobel would also smooth across the batch.
    magnitude = np.hypot(_filter3x3(gray, _SOBEL_Y), _filter3x3(gray, _SOBEL_Y.T))
    lines = np.clip(magnitude * 1.5, 0, 255)
    return _lerp(x, np.repeat(255.0 - lines, 3, axis=3), s)


def emboss(x: np.ndarray, s: float) -> np.ndarray:
    """Grey relief: a directional derivative of luminance around mid-grey."""
    relief = 128.0 + _filter3x3(_luma(x), _EMBOSS)
    return _lerp(x, np.repeat(relief, 3, axis=3), s)


def posterize(x: np.ndarray, s: float) -> np.ndarray:
    """Fewer levels per channel as strength grows: 6 levels at the weakest, 2 at full."""
    levels = round(2 + (1 - s) * 6)
    step = 255.0 / (levels - 1)
    return np.round(x / step) * step


def pixelate(x: np.ndarray, s: float) -> np.ndarray:
    return _pixelate_blocks(x, max(2, round(1 + s * _side(x) / 6)))


def solarize(x: np.ndarray, s: float) -> np.ndarray:
    """Invert the tones above a threshold that falls from 206 (weak) to 115 (full)."""
    threshold = 255.0 * (1 - 0.55 * s)
    return np.where(x > threshold, 255.0 - x, x)


def grayscale(x: np.ndarray, s: float) -> np.ndarray:
    return _lerp(x, _luma(x), s)


def invert(x: np.ndarray, s: float) -> np.ndarray:
    return _lerp(x, 255.0 - x, s)


def _tint(rgb_shift: Sequence[float]) -> Effect:
    shift = np.asarray(rgb_shift, dtype=np.float32)

    def effect(x: np.ndarray, s: float) -> np.ndarray:
        return x + s * shift

    return effect


warm = _tint((55.0, 15.0, -55.0))
cool = _tint((-55.0, 5.0, 55.0))


def hue_shift(x: np.ndarray, s: float) -> np.ndarray:
    """Rotate colours about the grey axis by s·180° (Rodrigues): greys stay grey."""
    theta = np.pi * s
    k = np.full(3, 1 / np.sqrt(3))
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rotation = (
        np.cos(theta) * np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * np.outer(k, k)
    )
    return x @ rotation.T.astype(np.float32)


def saturate(x: np.ndarray, s: float) -> np.ndarray:
    gray = _luma(x)
    return gray + (x - gray) * (1 + 2 * s)


def brighten(x: np.ndarray, s: float) -> np.ndarray:
    return x + (255.0 - x) * 0.6 * s


def darken(x: np.ndarray, s: float) -> np.ndarray:
    return x * (1 - 0.6 * s)


def contrast(x: np.ndarray, s: float) -> np.ndarray:
    return 128.0 + (x - 128.0) * (1 + 1.5 * s)


def blur(x: np.ndarray, s: float) -> np.ndarray:
    return _gaussian(x, 0.6 + s * _side(x) / 14)


def sharpen(x: np.ndarray, s: float) -> np.ndarray:
    """Unsharp mask: add back 3·s times the detail a small blur removes."""
    return x + 3 * s * (x - _gaussian(x, 1.0))


def vignette(x: np.ndarray, s: float) -> np.ndarray:
    return x * (1 - 0.85 * s * _radius2(x) / 2)


def spotlight(x: np.ndarray, s: float) -> np.ndarray:
    """Light the centre, dim the surround."""
    light = np.exp(-_radius2(x) / 0.3)
    return x * (1 - 0.4 * s * (1 - light)) + (255.0 - x) * 0.6 * s * light


def frame(x: np.ndarray, s: float) -> np.ndarray:
    """A near-black border whose width grows with strength."""
    width = max(1, round(s * _side(x) / 5))
    out = np.full_like(x, 16.0)
    out[:, width:-width, width:-width] = x[:, width:-width, width:-width]
    return out


def tilt_shift(x: np.ndarray, s: float) -> np.ndarray:
    """Blur the top and bottom bands, keep a sharp horizontal strip in the middle."""
    h = x.shape[1]
    band = np.clip(np.abs(np.linspace(-1, 1, h)) * 2 - 0.4, 0, 1).astype(np.float32)
    weight = band[None, :, None, None] * (0.6 + 0.4 * s)
    return _lerp(x, _gaussian(x, 1 + s * _side(x) / 6), weight)


def mosaic(x: np.ndarray, s: float) -> np.ndarray:
    """Pixelate a centred square (a censor block) whose side grows with strength."""
    h, w = x.shape[1:3]
    side = max(2, round((0.4 + 0.4 * s) * _side(x)))
    top, left = (h - side) // 2, (w - side) // 2
    out = x.copy()
    region = out[:, top : top + side, left : left + side]
    out[:, top : top + side, left : left + side] = _pixelate_blocks(
        region, max(2, round(_side(x) / 6))
    )
    return out


def blush(x: np.ndarray, s: float) -> np.ndarray:
    """Rosy patches where cheeks sit in a centred face: lower third, left and right of centre."""
    cheeks = np.exp(-_radius2(x, 0.25, -0.45) / 0.15) + np.exp(-_radius2(x, 0.25, 0.45) / 0.15)
    pink = np.array([240.0, 100.0, 130.0], dtype=np.float32)
    return _lerp(x, pink, 0.9 * s * np.clip(cheeks, 0, 1))


EFFECTS: dict[str, Effect] = {
    "sepia": sepia,
    "sketch": sketch,
    "emboss": emboss,
    "posterize": posterize,
    "pixelate": pixelate,
    "solarize": solarize,
    "grayscale": grayscale,
    "invert": invert,
    "warm": warm,
    "cool": cool,
    "hue_shift": hue_shift,
    "saturate": saturate,
    "brighten": brighten,
    "darken": darken,
    "contrast": contrast,
    "blur": blur,
    "sharpen": sharpen,
    "vignette": vignette,
    "spotlight": spotlight,
    "frame": frame,
    "tilt_shift": tilt_shift,
    "mosaic": mosaic,
    "blush": blush,
}


def apply_edits(images: np.ndarray, edits: Iterable[tuple[str, float]]) -> np.ndarray:
    """Apply an edit program to a uint8 (N, H, W, 3) batch, in order; returns a new uint8 batch.

    Values are clipped to [0, 255] after every edit, as if each edit produced an image, so a
    later edit never sees out-of-range colours from an earlier one.
    """
    check_images(images, allow_empty=True)
    x = images.astype(np.float32)
    for name, strength in edits:
        if name not in EFFECTS:
            raise ValueError(f"unknown edit primitive {name!r}; known: {', '.join(EFFECTS)}")
        if not 0 < strength <= 1:
            raise ValueError(f"strength of {name!r} must be in (0, 1], got {strength}")
        x = np.clip(EFFECTS[name](x, float(strength)), 0, 255)
    return np.rint(x).astype(np.uint8)


class ProceduralEditor:
    """Edits a batch with one concept text per image; parsed programs are cached per text."""

    def __init__(self) -> None:
        self._programs: dict[str, Edits] = {}

    def program(self, text: str) -> Edits:
        if text not in self._programs:
            self._programs[text] = parse_edit(text)
        return self._programs[text]

    def __call__(self, images: np.ndarray, texts: list[str]) -> np.ndarray:
        check_images(images, allow_empty=True)
        if len(texts) != len(images):
            raise ValueError(
                f"got {len(images)} images but {len(texts)} texts; need one text per image"
            )
        out = np.empty_like(images)
        # Images sharing a text are edited together: one vectorised pass per concept.
        for text in dict.fromkeys(texts):
            rows = [i for i, t in enumerate(texts) if t == text]
            out[rows] = apply_edits(images[rows], self.program(text))
        return out
