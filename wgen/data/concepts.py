"""Stage 1: concepts — image edits described in text, split by concept.

A concept is a short edit instruction ("strong sepia tone with a soft vignette"). Like the
prompt set of Gong et al. (2024), it is built from categories (artistic styles, colour and
detail changes, local / face-like modifications), sentence templates, synonym paraphrases
and combinations across categories. Every text maps to an *edit program*: an ordered tuple
of ``(primitive, strength)`` pairs, which the procedural editor
(:mod:`wgen.data.editors.procedural`) parses back out of the text and applies.

Splits are by concept, and the held-out split tests two kinds of generalisation:

- ``combination``: a set of primitives that never occurs together in any training (or
  validation) concept, although every one of them is seen in training;
- ``paraphrase``: the edit program of a training concept, worded with a template or a
  synonym that no training or validation text uses. Those words are *reserved* in the
  vocabulary below (``Wording.reserved``), so they can only ever appear in held-out texts.

Validation concepts are new edit programs over primitives seen in training, worded with the
training vocabulary.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations, product

from wgen.config import DataConfig

Edits = tuple[tuple[str, float], ...]

# ---------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wording:
    """Interchangeable words for one thing.

    ``seen`` words may appear in any text; ``reserved`` ones only in held-out paraphrases, so
    a paraphrase is guaranteed to use wording that training never showed. An empty string
    means "say nothing" (only used for the default strength).
    """

    seen: tuple[str, ...]
    reserved: tuple[str, ...] = ()

    def all(self) -> tuple[str, ...]:
        return self.seen + self.reserved


@dataclass(frozen=True)
class Primitive:
    """One edit primitive and the words that name it."""

    name: str
    category: str
    nouns: Wording  # used after an article: "apply a strong {noun}"
    adjectives: Wording  # used after "make it": "make it strongly {adjective}"


@dataclass(frozen=True)
class StrengthLevel:
    """A strength value and its words: adjectives qualify nouns, adverbs qualify adjectives."""

    value: float
    adjectives: Wording
    adverbs: Wording


@dataclass(frozen=True)
class Template:
    """A sentence pattern with one form per number of edits (1, 2, 3).

    ``{eK}`` is the K-th edit phrase, ``{aK}`` the same with an article ("a strong blur").
    ``kind`` says whether the edit phrases are noun phrases or adjective phrases.
    """

    name: str
    kind: str  # "noun" | "adjective"
    forms: tuple[str, str, str]
    reserved: bool = False


CATEGORIES: dict[str, str] = {
    "style": "artistic styles",
    "colour": "colour, tone and detail changes",
    "local": "local / face-like modifications",
}


def _w(*seen: str, reserved: Iterable[str] = ()) -> Wording:
    return Wording(tuple(seen), tuple(reserved))


def _primitive(name: str, category: str, nouns: Wording, adjectives: Wording) -> Primitive:
    return Primitive(name, category, nouns, adjectives)


# Each primitive has one reserved noun and one reserved adjective containing a word that no
# seen phrase uses, so a paraphrase's novelty can be checked word by word (tests do).
PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in (
        # -- style --------------------------------------------------------------------------
        _primitive(
            "sepia",
            "style",
            _w("sepia tone", "sepia filter", reserved=["antique tint"]),
            _w("sepia-toned", "sepia", reserved=["antique"]),
        ),
        _primitive(
            "sketch",
            "style",
            _w("pencil sketch", "sketch effect", reserved=["charcoal drawing"]),
            _w("sketched", "pencil-drawn", reserved=["hand-drawn"]),
        ),
        _primitive(
            "emboss",
            "style",
            _w("emboss effect", "relief effect", reserved=["stamped relief"]),
            _w("embossed", reserved=["stamped"]),
        ),
        _primitive(
            "posterize",
            "style",
            _w("posterize effect", "poster look", reserved=["screen-print look"]),
            _w("posterized", reserved=["screen-printed"]),
        ),
        _primitive(
            "pixelate",
            "style",
            _w("pixelation", "pixel-art look", reserved=["8-bit look"]),
            _w("pixelated", "blocky", reserved=["8-bit"]),
        ),
        _primitive(
            "solarize",
            "style",
            _w("solarize effect", "solarization", reserved=["sabattier effect"]),
            _w("solarized", reserved=["sabattier"]),
        ),
        # -- colour, tone and detail ----------------------------------------------------------
        _primitive(
            "grayscale",
            "colour",
            _w("grayscale filter", "black-and-white filter", reserved=["monochrome film"]),
            _w("grayscale", "black-and-white", reserved=["monochrome"]),
        ),
        _primitive(
            "invert",
            "colour",
            _w("colour inversion", "negative effect", reserved=["tone reversal"]),
            _w("inverted", "negative", reserved=["reversed"]),
        ),
        _primitive(
            "warm",
            "colour",
            _w("warm tint", "warm tone", reserved=["sunset cast"]),
            _w("warmer", "warm", reserved=["golden"]),
        ),
        _primitive(
            "cool",
            "colour",
            _w("cool tint", "cool tone", reserved=["icy cast"]),
            _w("cooler", "cool", reserved=["icy"]),
        ),
        _primitive(
            "hue_shift",
            "colour",
            _w("hue shift", "hue rotation", reserved=["colour swap"]),
            _w("hue-shifted", reserved=["recoloured"]),
        ),
        _primitive(
            "saturate",
            "colour",
            _w("saturation boost", "colour boost", reserved=["vibrance lift"]),
            _w("saturated", "vivid", reserved=["vibrant"]),
        ),
        _primitive(
            "brighten",
            "colour",
            _w("brightness boost", "brightening", reserved=["exposure lift"]),
            _w("brighter", "bright", reserved=["overexposed"]),
        ),
        _primitive(
            "darken",
            "colour",
            _w("darkening", "brightness cut", reserved=["underexposure"]),
            _w("darker", "dark", reserved=["dim"]),
        ),
        _primitive(
            "contrast",
            "colour",
            _w("contrast boost", "high contrast", reserved=["dramatic contrast"]),
            _w("high-contrast", "contrasty", reserved=["dramatic"]),
        ),
        _primitive(
            "blur",
            "colour",
            _w("blur", "gaussian blur", reserved=["defocus"]),
            _w("blurry", "blurred", reserved=["defocused"]),
        ),
        _primitive(
            "sharpen",
            "colour",
            _w("sharpening", "detail boost", reserved=["crispness"]),
            _w("sharper", "sharpened", reserved=["crisp"]),
        ),
        # -- local / face-like ----------------------------------------------------------------
        _primitive(
            "vignette",
            "local",
            _w("vignette", "edge vignette", reserved=["corner shading"]),
            _w("vignetted", reserved=["corner-shaded"]),
        ),
        _primitive(
            "spotlight",
            "local",
            _w("spotlight", "centre spotlight", reserved=["stage light"]),
            _w("spotlit", reserved=["stage-lit"]),
        ),
        _primitive(
            "frame",
            "local",
            _w("black frame", "border frame", reserved=["passe-partout"]),
            _w("framed", reserved=["matted"]),
        ),
        _primitive(
            "tilt_shift",
            "local",
            _w("tilt-shift blur", "tilt-shift effect", reserved=["miniature effect"]),
            _w("tilt-shifted", reserved=["toy-like"]),
        ),
        _primitive(
            "mosaic",
            "local",
            _w("centre mosaic", "censor block", reserved=["privacy mosaic"]),
            _w("censored", reserved=["anonymised"]),
        ),
        _primitive(
            "blush",
            "local",
            _w("rosy blush", "cheek blush", reserved=["pink glow"]),
            _w("blushing", "rosy-cheeked", reserved=["flushed"]),
        ),
    )
}

# Three strength levels. A text with no strength word means MEDIUM.
WEAK, MEDIUM, STRONG = 0.35, 0.65, 1.0
STRENGTHS: tuple[StrengthLevel, ...] = (
    StrengthLevel(
        WEAK,
        _w("slight", "subtle", "soft", reserved=["faint", "gentle"]),
        _w("slightly", "subtly", "softly", reserved=["faintly", "gently"]),
    ),
    StrengthLevel(MEDIUM, _w("", "moderate", "medium"), _w("", "moderately")),
    StrengthLevel(
        STRONG,
        _w("strong", "heavy", "intense", reserved=["bold", "extreme"]),
        _w("strongly", "heavily", "very", reserved=["extremely", "intensely"]),
    ),
)
STRENGTH_BY_VALUE: dict[float, StrengthLevel] = {level.value: level for level in STRENGTHS}

TEMPLATES: tuple[Template, ...] = (
    Template("bare", "noun", ("{e0}", "{e0} with {a1}", "{e0} with {a1} and {a2}")),
    Template("apply", "noun", ("apply {a0}", "apply {a0} and {a1}", "apply {a0}, {a1} and {a2}")),
    Template(
        "make",
        "adjective",
        ("make it {e0}", "make it {e0} and {e1}", "make it {e0}, {e1} and {e2}"),
    ),
    Template("add", "noun", ("add {a0}", "add {a0}, then {a1}", "add {a0}, then {a1}, then {a2}")),
    # Reserved: only held-out paraphrases use these sentence patterns.
    Template(
        "give",
        "noun",
        (
            "give the photo {a0}",
            "give the photo {a0} plus {a1}",
            "give the photo {a0}, {a1} plus {a2}",
        ),
        reserved=True,
    ),
    Template(
        "render",
        "adjective",
        (
            "render the picture {e0}",
            "render the picture {e0} plus {e1}",
            "render the picture {e0}, {e1} plus {e2}",
        ),
        reserved=True,
    ),
)

# Filler a reader may add without changing the edit; template words are filler too.
FILLER_WORDS: tuple[str, ...] = ("a", "an", "effect", "filter", "look", "image", "please")

# Combinations whose later edit would erase or undo the earlier one (in canonical order:
# style, then colour, then local), so the pair would not describe a visible two-part edit.
CONFLICTS: frozenset[frozenset[str]] = frozenset(
    frozenset(pair)
    for pair in (
        ("sketch", "grayscale"),
        ("sketch", "saturate"),
        ("sketch", "hue_shift"),
        ("emboss", "grayscale"),
        ("emboss", "saturate"),
        ("emboss", "hue_shift"),
        ("sepia", "grayscale"),
        ("pixelate", "mosaic"),
    )
)

# Spelling variants a user may type; texts the vocabulary generates never need them.
ALIASES: dict[str, str] = {
    "color": "colour",
    "grey": "grayscale",
    "gray": "grayscale",
    "greyscale": "grayscale",
    "center": "centre",
    "recolored": "recoloured",
    "anonymized": "anonymised",
}

_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-case words of ``text``; hyphenated words stay whole, punctuation is dropped.

    Shared by the generator (tests compare the words of texts) and the parser, so both see
    the same words.
    """
    return [ALIASES.get(token, token) for token in _TOKEN.findall(text.lower())]


def template_words() -> set[str]:
    """Every literal word of every template (they are filler for the parser)."""
    words: set[str] = set()
    for template in TEMPLATES:
        for form in template.forms:
            words.update(tokenize(re.sub(r"\{[ea]\d\}", " ", form)))
    return words


# ---------------------------------------------------------------------------------------
# Concepts
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    """One edit concept: its text, its split and the edit program the text describes."""

    id: str
    text: str
    split: str  # "train" | "val" | "heldout"
    category: str  # categories of its primitives in edit order, joined by "+": "style+local"
    edits: Edits  # (primitive, strength in (0, 1]) in the order they are applied
    kind: str = ""  # for heldout: "combination" | "paraphrase"


# Share of single edits, pairs and triples among training / validation concepts: pairs
# dominate (the paper's combinations across categories), singles anchor each primitive.
ARITY_SHARES: dict[int, float] = {1: 0.25, 2: 0.55, 3: 0.20}
# Every third held-out combination is a triple, the others pairs.
_TRIPLE_EVERY = 3


def _canonical(names: Iterable[str]) -> tuple[str, ...]:
    """Primitive names in vocabulary order (style, colour, local): one order per set."""
    order = {name: i for i, name in enumerate(PRIMITIVES)}
    return tuple(sorted(names, key=order.__getitem__))


def primitive_sets(arity: int) -> list[tuple[str, ...]]:
    """All composable sets of ``arity`` primitives: one per category, no conflicting pair."""
    if arity == 1:
        return [(name,) for name in PRIMITIVES]
    by_category = [[p.name for p in PRIMITIVES.values() if p.category == c] for c in CATEGORIES]
    sets: set[tuple[str, ...]] = set()
    for categories in combinations(range(len(by_category)), arity):
        for names in product(*(by_category[c] for c in categories)):
            pairs = {frozenset((a, b)) for a in names for b in names if a != b}
            if not pairs & CONFLICTS:
                sets.add(_canonical(names))
    return sorted(sets, key=lambda names: [list(PRIMITIVES).index(n) for n in names])


def edit_programs(names: tuple[str, ...]) -> list[Edits]:
    """Every strength assignment of one set of primitives, in canonical order."""
    levels = [level.value for level in STRENGTHS]
    return [tuple(zip(names, values, strict=True)) for values in product(levels, repeat=len(names))]


@functools.cache
def _all_programs() -> dict[int, list[Edits]]:
    """Every edit program the vocabulary can express, by number of primitives (do not mutate)."""
    return {
        arity: [program for names in primitive_sets(arity) for program in edit_programs(names)]
        for arity in ARITY_SHARES
    }


def max_concepts() -> int:
    """How many distinct edit programs (hence concepts with distinct edits) exist at most."""
    return sum(len(programs) for programs in _all_programs().values())


@functools.cache
def _names(program: Edits) -> frozenset[str]:
    """The set of primitives of a program (cached: set logic runs over ~10k programs)."""
    return frozenset(name for name, _ in program)


def _category(program: Edits) -> str:
    categories: list[str] = []
    for name, _ in program:
        category = PRIMITIVES[name].category
        if category not in categories:
            categories.append(category)
    return "+".join(categories)


# -- rendering texts -----------------------------------------------------------------------


def _article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou8' else 'a'} {phrase}"


def _pick(wording: Wording, rng: random.Random, reserved: bool) -> str:
    return rng.choice(wording.reserved if reserved else wording.seen)


def _edit_phrase(
    edit: tuple[str, float],
    kind: str,
    rng: random.Random,
    reserve_name: bool,
    reserve_strength: bool,
) -> str:
    """'strong sepia tone' (noun kind) or 'strongly sepia-toned' (adjective kind)."""
    name, strength = edit
    primitive, level = PRIMITIVES[name], STRENGTH_BY_VALUE[strength]
    if kind == "noun":
        head, qualifier = primitive.nouns, level.adjectives
    else:
        head, qualifier = primitive.adjectives, level.adverbs
    return f"{_pick(qualifier, rng, reserve_strength)} {_pick(head, rng, reserve_name)}".strip()


def render(
    program: Edits,
    template: Template,
    rng: random.Random,
    reserved_names: frozenset[int] = frozenset(),
    reserved_strengths: frozenset[int] = frozenset(),
) -> str:
    """Word ``program`` with ``template``; edits whose index is in ``reserved_*`` take reserved words."""
    phrases = [
        _edit_phrase(edit, template.kind, rng, i in reserved_names, i in reserved_strengths)
        for i, edit in enumerate(program)
    ]
    slots = {f"e{i}": phrase for i, phrase in enumerate(phrases)}
    slots.update({f"a{i}": _article(phrase) for i, phrase in enumerate(phrases)})
    return template.forms[len(program) - 1].format(**slots)


def _render_seen(program: Edits, rng: random.Random) -> str:
    """Training-vocabulary wording: a seen template, seen synonyms only."""
    return render(program, rng.choice([t for t in TEMPLATES if not t.reserved]), rng)


def _render_paraphrase(program: Edits, rng: random.Random) -> str:
    """Reword ``program`` with exactly one reserved element: a template, a name or a strength word.

    One reserved element (the rest training vocabulary) keeps a paraphrase close to its
    training concept, so it tests the wording and nothing else.
    """
    options: list[tuple[str, int]] = [("template", -1)]
    options += [("name", i) for i in range(len(program))]
    options += [("strength", i) for i, (_, s) in enumerate(program) if _has_reserved_strength(s)]
    choice, index = rng.choice(options)
    if choice == "template":
        return render(program, rng.choice([t for t in TEMPLATES if t.reserved]), rng)
    template = rng.choice([t for t in TEMPLATES if not t.reserved])
    names = frozenset({index}) if choice == "name" else frozenset()
    strengths = frozenset({index}) if choice == "strength" else frozenset()
    return render(program, template, rng, names, strengths)


def _has_reserved_strength(strength: float) -> bool:
    level = STRENGTH_BY_VALUE[strength]
    return bool(level.adjectives.reserved and level.adverbs.reserved)


# -- choosing programs -----------------------------------------------------------------------


def _quotas(n: int, capacity: dict[int, int]) -> dict[int, int]:
    """Split ``n`` into per-arity counts near ARITY_SHARES without exceeding any capacity."""
    quotas = {arity: min(capacity[arity], int(n * share)) for arity, share in ARITY_SHARES.items()}
    # Rounding and full strata leave a remainder; pairs take it first, then triples, singles.
    for arity in (2, 3, 1):
        quotas[arity] += min(n - sum(quotas.values()), capacity[arity] - quotas[arity])
    return quotas


def _pick_programs(
    pools: dict[int, list[Edits]],
    n: int,
    rng: random.Random,
    what: str,
    must_show: frozenset[str] = frozenset(),
) -> list[Edits]:
    """Draw ``n`` distinct programs, stratified by arity, covering primitives greedily.

    Within each arity, programs that show a primitive of ``must_show`` not yet shown come
    first, then programs showing any primitive not yet shown, then the rest — so even a
    tiny training split shows every primitive the held-out combinations need, and a large
    one shows all of them.
    """
    capacity = {arity: len(pool) for arity, pool in pools.items()}
    if n > sum(capacity.values()):
        raise ValueError(
            f"{what}={n} is more than the vocabulary can make: at most {sum(capacity.values())} "
            "distinct edits are left for this split"
        )
    shown: set[str] = set()
    chosen: list[Edits] = []
    for arity, quota in _quotas(n, capacity).items():
        pool = list(pools[arity])
        rng.shuffle(pool)
        picked: dict[Edits, None] = {}  # insertion-ordered set
        for wanted in (lambda p: _names(p) & (must_show - shown), lambda p: _names(p) - shown):
            for program in pool:
                if len(picked) < quota and program not in picked and wanted(program):
                    picked[program] = None
                    shown.update(_names(program))
        for program in pool:
            if len(picked) < quota:
                picked.setdefault(program)
        chosen += picked
    rng.shuffle(chosen)
    return chosen


def _pick_heldout_sets(n: int, rng: random.Random) -> list[frozenset[str]]:
    """Primitive sets reserved for held-out combinations: mostly pairs, every third a triple."""
    candidates = {arity: [frozenset(s) for s in primitive_sets(arity)] for arity in (2, 3)}
    for pool in candidates.values():
        rng.shuffle(pool)
    n_triples = n // _TRIPLE_EVERY
    n_pairs = n - n_triples
    if n_pairs > len(candidates[2]) or n_triples > len(candidates[3]):
        raise ValueError(
            f"{n} held-out combinations need {n_pairs} pairs and {n_triples} triples of primitives; "
            f"the vocabulary has {len(candidates[2])} and {len(candidates[3])} "
            f"(at most {len(candidates[2]) + len(candidates[3])} combinations)"
        )
    return candidates[2][:n_pairs] + candidates[3][:n_triples]


def _check_counts(cfg: DataConfig) -> None:
    for name in ("n_train_concepts", "n_val_concepts", "n_heldout_concepts"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"data.{name} must be ≥ 0, got {getattr(cfg, name)}")
    n_paraphrases = cfg.n_heldout_concepts // 2
    if n_paraphrases > cfg.n_train_concepts:
        raise ValueError(
            f"data.n_heldout_concepts={cfg.n_heldout_concepts} asks for {n_paraphrases} paraphrases "
            f"of distinct training concepts, but there are only {cfg.n_train_concepts}: at most "
            f"{2 * cfg.n_train_concepts + 1} held-out concepts for this many training concepts"
        )


def make_concepts(cfg: DataConfig) -> list[Concept]:
    """The concept set of a run: train, then validation, then held-out (seeded by ``cfg.seed``).

    Deterministic for a given config. Ids ``c0000``, ``c0001``, ... follow that order. Every
    training/validation program is distinct, so all texts are distinct too (the parser maps
    a text to exactly one program); a paraphrase differs from its training text by a
    reserved word.
    """
    _check_counts(cfg)
    rng = random.Random(cfg.seed)
    n_combinations = (cfg.n_heldout_concepts + 1) // 2
    n_paraphrases = cfg.n_heldout_concepts // 2

    # 1. Reserve the held-out combinations first, so no train or val concept contains them.
    held_sets = _pick_heldout_sets(n_combinations, rng)
    needed = frozenset().union(*held_sets)

    def allowed(program: Edits) -> bool:
        names = _names(program)
        return not any(held <= names for held in held_sets)

    programs = _all_programs()
    train_pools = {a: [p for p in pool if allowed(p)] for a, pool in programs.items()}
    train = _pick_programs(train_pools, cfg.n_train_concepts, rng, "data.n_train_concepts", needed)
    seen = frozenset().union(*map(_names, train)) if train else frozenset()
    if not needed <= seen:
        raise ValueError(
            f"data.n_train_concepts={cfg.n_train_concepts} is too few to show every primitive of "
            f"the {n_combinations} held-out combinations (missing: {sorted(needed - seen)}); "
            "raise n_train_concepts or lower n_heldout_concepts"
        )

    # 2. Validation: new programs over primitives seen in training.
    taken = set(train)
    val_pools = {
        a: [p for p in pool if p not in taken and _names(p) <= seen]
        for a, pool in train_pools.items()
    }
    val = _pick_programs(val_pools, cfg.n_val_concepts, rng, "data.n_val_concepts")

    # 3. Held out: the reserved combinations (training wording), then paraphrases.
    unseen_combinations = [
        tuple((name, rng.choice(STRENGTHS).value) for name in _canonical(held))
        for held in held_sets
    ]
    paraphrased = rng.sample(train, n_paraphrases)

    rows: list[tuple[str, Edits, str, str]] = []
    rows += [("train", p, _render_seen(p, rng), "") for p in train]
    rows += [("val", p, _render_seen(p, rng), "") for p in val]
    rows += [("heldout", p, _render_seen(p, rng), "combination") for p in unseen_combinations]
    rows += [("heldout", p, _render_paraphrase(p, rng), "paraphrase") for p in paraphrased]
    concepts = [
        Concept(f"c{i:04d}", text, split, _category(program), program, kind)
        for i, (split, program, text, kind) in enumerate(rows)
    ]
    texts = [c.text for c in concepts]
    assert len(set(texts)) == len(texts), "concept texts must be distinct"
    return concepts


def select_for_collection(
    concepts: list[Concept], max_concepts: int | None, heldout: int = 0
) -> list[Concept]:
    """The concepts a collection run trains: validation, held-out ceilings, then training.

    Validation concepts get a sixth of the ``max_concepts`` budget (at least 2), the rest
    goes to training concepts; ``heldout`` held-out concepts (half unseen combinations, half
    unseen paraphrases) are collected on top, only as the ceiling of what a predicted LoRA
    could reach — nothing ever trains on them. ``None`` takes every train and val concept.

    Training concepts are not the first N ids: a generator cannot learn a primitive it never
    saw (the first 80 demo training concepts never used ``invert``, which a validation
    concept needed). They are picked greedily so that every (primitive, strength) of the
    chosen validation and held-out concepts, and the training program behind every chosen
    paraphrase, is covered first; the rest follow in id order (ids are already shuffled).
    """
    by_split: dict[str, list[Concept]] = {"train": [], "val": [], "heldout": []}
    for concept in sorted(concepts, key=lambda c: c.id):
        by_split[concept.split].append(concept)
    train, val, held = by_split["train"], by_split["val"], by_split["heldout"]
    if max_concepts is None:
        n_val, n_train = len(val), len(train)
    else:
        n_val = min(len(val), max(2, max_concepts // 6))
        n_train = min(len(train), max(0, max_concepts - n_val))
    combos = [c for c in held if c.kind == "combination"]
    paraphrases = [c for c in held if c.kind == "paraphrase"]
    n_para = min(len(paraphrases), heldout // 2)
    chosen_held = combos[: min(len(combos), heldout - n_para)] + paraphrases[:n_para]
    chosen_val = val[:n_val]

    must_programs = {c.edits for c in chosen_held if c.kind == "paraphrase"}
    first = [c for c in train if c.edits in must_programs]
    picked = coverage_first(train, n_train, chosen_val + chosen_held, concepts, first)
    return chosen_val + chosen_held + sorted(picked, key=lambda c: c.id)


def coverage_first(
    train: list[Concept],
    n_train: int,
    targets: list[Concept],
    vocabulary: Iterable[Concept] = (),
    first: Iterable[Concept] = (),
) -> list[Concept]:
    """``n_train`` of the ``train`` concepts (sorted by id): ``first`` (up to ``n_train``), then
    greedily the concept that covers the most still-uncovered (primitive, strength) of the
    ``targets`` and primitives of the ``vocabulary``, then the rest in id order.

    The choice for a smaller ``n_train`` is a subset of the choice for a larger one, so a
    learning curve over ``n_train`` adds concepts and never swaps them.
    """
    wanted = {edit for c in targets for edit in c.edits}
    wanted |= {(name, None) for c in vocabulary for name, _ in c.edits}  # every primitive once
    picked: dict[str, Concept] = {}
    for concept in first:
        if len(picked) < n_train:
            picked[concept.id] = concept

    def covers(concept: Concept) -> set:
        return {e for e in concept.edits if e in wanted} | {
            (n, None) for n, _ in concept.edits if (n, None) in wanted
        }

    for concept in picked.values():
        wanted -= covers(concept)
    while len(picked) < n_train and wanted:
        best = max(
            (c for c in train if c.id not in picked), key=lambda c: len(covers(c)), default=None
        )
        if best is None or not covers(best):
            break
        picked[best.id] = best
        wanted -= covers(best)
    for concept in train:
        if len(picked) >= n_train:
            break
        picked.setdefault(concept.id, concept)
    return list(picked.values())


def paraphrases(concept: Concept, count: int, seed: int = 0) -> list[str]:
    """Up to ``count`` other wordings of ``concept``'s edit program, never its own text.

    The paper asks an LLM to reword every training prompt; the concept grammar does the same
    for free: other seen templates and seen synonyms of the same program. Reserved words are
    never used, so the held-out paraphrase split stays unseen. Deterministic per
    (seed, concept id); fewer than ``count`` come back when the grammar runs out of wordings.
    """
    if count <= 0:
        return []
    rng = random.Random(f"{seed}:{concept.id}:paraphrases")
    found: dict[str, None] = {}
    for _ in range(count * 8):  # bounded: a single short edit has only so many wordings
        text = _render_seen(concept.edits, rng)
        if text != concept.text:
            found.setdefault(text)
        if len(found) == count:
            break
    return list(found)
