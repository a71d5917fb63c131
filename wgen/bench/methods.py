"""The benchmark's methods: each one is "the initial weights for a concept" (+ the seconds it
took to make them), fine-tuned afterwards by the one training loop (`wgen.gan.training`).

    scratch       pix2pix: the whole GAN from pix2pix's random init (no base, no LoRA)
    scratch-identity  the same from the identity-friendly init (the generator starts as its
                  input: a much easier start on these edits, reported as a second variant)
    lora-zero     base + LoRA at peft's standard init (B = 0): E2GAN-style
    mean          the mean of all training checkpoints
    nearest       the training concept nearest by text embedding (its closest wording)
    knn           text-similarity-weighted mean of the k nearest training concepts
    ridge         a linear map text embedding → weights fitted on the training checkpoints
    hyper         a small MLP text → weights trained with the function-space loss
    nearest-edit  the training concept with the closest edit program: an ORACLE no text
                  model sees, reported apart
    wgen-1        the weight generator, one direct denoising step (`WeightGenerator.generate`)
    wgen-ddim     the same, `bench.ddim_steps` DDIM steps
    wgen-cfg      the same with classifier-free guidance at w = `distill.bench_guidance`
                  (one step, conditional and null halves in one forward)
    wgen-distilled-1, wgen-distilled-4
                  the students of `wgen distill` (`<run>/distill/steps-N`, else the
                  w-student `<run>/distill/w` at N steps) at the same w, w as their input

The text baselines are fitted on exactly what the generator saw: every training concept's
mean checkpoint and every wording of its text (own text + grammar paraphrases).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from wgen.config import BenchConfig, Config, TrainConfig
from wgen.core.errors import ConfigError, InputFileError
from wgen.core.runfolder import fingerprint
from wgen.core.runtime import atomic_file
from wgen.data.concepts import Concept, paraphrases
from wgen.data.pairs import CONCEPTS_FILE, load_concepts
from wgen.generator.baselines import (
    Hyper,
    Ridge,
    TrainingSet,
    hyper_prediction,
    knn_prediction,
    mean_prediction,
    nearest_prediction,
    train_hyper,
)
from wgen.generator.dataset import row_vectors, training_subset
from wgen.generator.funcspace import FunctionSpaceLoss
from wgen.generator.textcache import cached_embeddings, read_text_cache, text_cache_path
from wgen.models.base import BaseModel
from wgen.weights.blocks import BlockLayout
from wgen.weights.codec import BlockCodec
from wgen.weights.format import Manifest, flatten, unflatten
from wgen.weights.store import WeightStore


@dataclass(frozen=True)
class Method:
    """One way of starting a concept's fine-tuning."""

    name: str
    what: str  # one line for the report
    oracle: bool = False  # sees something no text model sees: reported apart
    predicted: bool = False  # a LoRA predicted from the training checkpoints: novelty applies


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("scratch", "pix2pix: the whole GAN from pix2pix's random init, N(0, 0.02)"),
        Method(
            "scratch-identity",
            "the whole GAN from the identity-friendly init (the generator returns its input)",
        ),
        Method("lora-zero", "base + LoRA at the standard init (B = 0), E2GAN-style"),
        Method("mean", "mean of all training checkpoints", predicted=True),
        Method("nearest", "training concept nearest by text embedding", predicted=True),
        Method(
            "knn", "similarity-weighted mean of the k nearest training concepts", predicted=True
        ),
        Method("ridge", "linear map text embedding → weights", predicted=True),
        Method("hyper", "MLP text → weights, function-space loss", predicted=True),
        Method(
            "nearest-edit",
            "training concept with the closest edit program (oracle)",
            oracle=True,
            predicted=True,
        ),
        Method("wgen-1", "weight generator, one denoising step", predicted=True),
        Method("wgen-ddim", "weight generator, a few DDIM steps", predicted=True),
        Method("wgen-cfg", "weight generator with guidance, one step", predicted=True),
        Method("wgen-distilled-1", "guidance-distilled student, one step", predicted=True),
        Method("wgen-distilled-4", "guidance-distilled student, 4 DDIM steps", predicted=True),
    )
}
TEXT_BASELINES = ("mean", "nearest", "knn", "ridge", "hyper")  # goal (b)'s competitors
SCRATCH_INITS = {"scratch": "pix2pix", "scratch-identity": "identity"}  # method → GAN init
# method → denoising steps (None = bench.ddim_steps)
GENERATED = {
    "wgen-1": 1,
    "wgen-ddim": None,
    "wgen-cfg": 1,
    "wgen-distilled-1": 1,
    "wgen-distilled-4": 4,
}
GUIDED = ("wgen-cfg", "wgen-distilled-1", "wgen-distilled-4")  # at w = distill.bench_guidance
# a student of <run>/distill (`wgen distill`), not the benched generator
DISTILLED = ("wgen-distilled-1", "wgen-distilled-4")


def split_flat(vector: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    """One flat vector (all groups back to back) → one vector per group."""
    return [
        part.copy() for part in np.split(np.asarray(vector, np.float32), np.cumsum(lengths)[:-1])
    ]


def edit_distance(a: Concept | tuple, b: Concept | tuple) -> float:
    """L1 distance between two edit programs as {primitive: strength} (absent = 0)."""
    sa = dict(a.edits if isinstance(a, Concept) else a)
    sb = dict(b.edits if isinstance(b, Concept) else b)
    return sum(abs(sa.get(k, 0.0) - sb.get(k, 0.0)) for k in sa.keys() | sb.keys())


def pooled_embeddings(
    out: Path, encoder: str, texts: list[str], cache_dir: Path | None = None
) -> dict[str, np.ndarray]:
    """Pooled τ(T) for ``texts``: the run folder's text cache first; texts it lacks are
    embedded and cached under ``cache_dir`` (default: the run folder itself)."""
    have = read_text_cache(text_cache_path(out, encoder))
    missing = [t for t in dict.fromkeys(texts) if t not in have]
    if missing:
        have.update(cached_embeddings(cache_dir or out, encoder, missing))
    return {t: have[t] for t in texts}


@dataclass(frozen=True)
class BaselineRecipe:
    """What the text baselines are fitted on, and hyper's training: the generator's own
    data (wordings per concept, training subset) and recipe (epochs, rate schedule), so a
    rival gets the effort the method gets."""

    paraphrases: int
    max_train_concepts: int | None
    hyper_epochs: int
    hyper_lr_schedule: str

    @classmethod
    def resolve(
        cls, bench: BenchConfig, generator: TrainConfig, run: TrainConfig
    ) -> BaselineRecipe:
        """``generator``: the train section the generator was trained with (its folder's
        config.yaml; the run's own when no generator is benched). A bench setting that
        would fit the baselines on other data than the generator's is a `ConfigError`."""
        if bench.paraphrases is not None and bench.paraphrases != generator.paraphrases:
            raise ConfigError(
                f"bench.paraphrases={bench.paraphrases}: the generator was trained on "
                f"{generator.paraphrases} wordings per concept (train.paraphrases), and its "
                f"baselines must see the same; leave it unset or set {generator.paraphrases}"
            )
        if run.max_train_concepts != generator.max_train_concepts:
            raise ConfigError(
                f"train.max_train_concepts={run.max_train_concepts}: the generator was trained "
                f"on {generator.max_train_concepts or 'every'} training concept(s), and its "
                f"baselines must be fitted on the same; pass --set "
                f"train.max_train_concepts={generator.max_train_concepts}"
            )
        return cls(
            paraphrases=generator.paraphrases,
            max_train_concepts=generator.max_train_concepts,
            hyper_epochs=generator.epochs if bench.hyper_epochs is None else bench.hyper_epochs,
            hyper_lr_schedule=bench.hyper_lr_schedule or generator.lr_schedule,
        )


HYPER_CACHE = "hyper.safetensors"  # inside the bench folder: a resumed bench skips the refit


def cached_hyper(cache_dir: Path | None, fields: dict, fit) -> tuple[Hyper, bool]:
    """(``fit()``, False), or (the `Hyper` a previous call with the same ``fields`` saved in
    ``cache_dir``, True): a resumed bench would otherwise refit it (minutes on the bench preset)
    for every invocation. A cache that is unreadable or was fitted on other fields is refit
    and overwritten, never an error: it is a cache, not an input."""
    if cache_dir is None:
        return fit(), False
    path = Path(cache_dir) / HYPER_CACHE
    key = fingerprint(fields)
    try:
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("fingerprint") == key:
                state = {name: f.get_tensor(name) for name in f.keys()}
                model = Hyper(
                    state["net.0.weight"].shape[1],
                    state["out.weight"].shape[0],
                    hidden=state["net.0.weight"].shape[0],
                )
                model.load_state_dict(state)
                return model, True
    except (OSError, SafetensorError, KeyError, RuntimeError):
        pass  # missing or damaged: fit again below
    model = fit()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp),
            metadata={"fingerprint": key},
        )
    return model, False


@dataclass
class Baselines:
    """Every text baseline, fitted on one run folder's training checkpoints.

    Attributes:
        data: the training set (mean checkpoint + wordings per training concept).
        programs: every concept of the run folder by id (edit programs for nearest-edit).
        checkpoints: (R, total) every training checkpoint as one flat vector (novelty).
        checkpoint_concepts: the concept id of each row of ``checkpoints``.
        ridge, hyper: the fitted learned baselines (None where not asked for).
    """

    config: Config
    manifest: Manifest
    data: TrainingSet
    programs: dict[str, Concept]
    checkpoints: np.ndarray
    checkpoint_concepts: list[str]
    encoder: str
    cache_dir: Path
    out: Path
    ridge: Ridge | None = None
    hyper: Hyper | None = None
    func_loss: FunctionSpaceLoss | None = None
    knn_k: int = 5
    fit_seconds: float = 0.0
    hyper_from_cache: bool = False  # read from the bench folder's cache, not refit

    @classmethod
    def fit(
        cls,
        out: Path,
        config: Config,
        base: BaseModel | None,
        methods: list[str],
        recipe: BaselineRecipe,
        ridge_alpha: float = 1.0,
        knn_k: int = 5,
        cache_dir: Path | None = None,
    ) -> Baselines:
        """Read the training checkpoints of ``out`` and fit what ``methods`` need (``base``,
        the run's base model, only for "hyper")."""
        out = Path(out)
        store = WeightStore(out)
        manifest = store.manifest()
        lengths = manifest.group_lengths
        train = store.read(splits=["train"])
        n_paraphrases = recipe.paraphrases
        if recipe.max_train_concepts is not None:
            # A generator trained on a subset (a learning-curve point) is compared with
            # baselines that saw the same concepts, not every one collected.
            meta = store.read(with_vectors=False)
            kept = training_subset(out, meta, recipe.max_train_concepts)
            train = train[train["concept_id"].isin(kept)]
        train_ids = sorted(train["concept_id"].unique())
        rows = [np.concatenate(v) for v in row_vectors(train, len(lengths))]
        checkpoints = np.stack(rows).astype(np.float32)
        row_ids = list(train["concept_id"])
        targets = np.stack(
            [
                checkpoints[[i for i, c in enumerate(row_ids) if c == cid]].mean(axis=0)
                for cid in train_ids
            ]
        ).astype(np.float32)
        programs = {c.id: c for c in load_concepts(out / CONCEPTS_FILE)}
        wordings = {
            c: [programs[c].text] + paraphrases(programs[c], n_paraphrases, config.data.seed)
            for c in train_ids
        }
        encoder = config.train.text_encoder
        pooled = pooled_embeddings(
            out, encoder, [t for ts in wordings.values() for t in ts], cache_dir
        )
        data = TrainingSet(
            train_ids, targets, [np.stack([pooled[t] for t in wordings[c]]) for c in train_ids]
        )
        fitted = cls(
            config=config,
            manifest=manifest,
            data=data,
            programs=programs,
            checkpoints=checkpoints,
            checkpoint_concepts=row_ids,
            encoder=encoder,
            cache_dir=Path(cache_dir or out),
            out=out,
            knn_k=knn_k,
        )
        start = time.perf_counter()
        if "ridge" in methods:
            fitted.ridge = Ridge.fit(data, ridge_alpha)
        if "hyper" in methods:
            layout = BlockLayout.from_lengths(lengths, config.denoiser.block_size)
            codec = BlockCodec.fit(row_vectors(train, len(lengths)), layout, center=True)
            assert base is not None, "hyper trains through the base model"
            fitted.func_loss = FunctionSpaceLoss(base, codec, manifest)
            tasks = {
                t.concept_id: (
                    t.train_inputs[: config.train.func_pairs],
                    t.train_targets[: config.train.func_pairs],
                )
                for t in base.task_data(out, train_ids)
            }
            fitted.hyper, fitted.hyper_from_cache = cached_hyper(
                cache_dir,
                {
                    "recipe": dataclasses.asdict(recipe),
                    "concepts": train_ids,
                    "seed": config.data.seed,
                    "func_pairs": config.train.func_pairs,
                    "block_size": config.denoiser.block_size,
                    "encoder": encoder,
                },
                lambda: train_hyper(
                    data,
                    tasks,
                    fitted.func_loss,
                    epochs=recipe.hyper_epochs,
                    seed=config.data.seed,
                    lr_schedule=recipe.hyper_lr_schedule,
                ),
            )
        fitted.fit_seconds = time.perf_counter() - start
        return fitted

    def embed(self, texts: list[str]) -> dict[str, np.ndarray]:
        return pooled_embeddings(self.out, self.encoder, texts, self.cache_dir)

    def nearest_edit_id(self, edits: tuple) -> str:
        return min(self.data.concept_ids, key=lambda c: edit_distance(edits, self.programs[c]))

    def predict(self, method: str, embedding: np.ndarray, edits: tuple | None) -> np.ndarray:
        """The flat weight vector a text baseline (or the nearest-edit oracle) predicts."""
        if method == "mean":
            return mean_prediction(self.data)
        if method == "nearest":
            return nearest_prediction(self.data, embedding)
        if method == "knn":
            return knn_prediction(self.data, embedding, self.knn_k)
        if method == "ridge":
            assert self.ridge is not None, "fit with 'ridge' in methods"
            return self.ridge.predict(embedding)
        if method == "hyper":
            assert self.hyper is not None and self.func_loss is not None
            return hyper_prediction(self.hyper, self.func_loss, embedding)
        if method == "nearest-edit":
            if edits is None:
                raise ValueError("nearest-edit needs the concept's edit program")
            return self.data.targets[self.data.concept_ids.index(self.nearest_edit_id(edits))]
        raise ValueError(f"{method!r} is not a baseline prediction")

    def state(self, flat: np.ndarray) -> dict[str, torch.Tensor]:
        """A flat vector → the state dict of selected parameters (manifest keys) it stands for."""
        return unflatten(split_flat(flat, self.manifest.group_lengths), self.manifest)

    def flat(self, state: dict[str, torch.Tensor]) -> np.ndarray:
        return np.concatenate(flatten(state, self.manifest)).astype(np.float32)

    def novelty(self, flat: np.ndarray) -> dict[str, float | str]:
        """Distance from a predicted LoRA to its nearest training checkpoint (L2 over the
        flat vector), beside the typical distance between two checkpoints of one concept."""
        distances = np.linalg.norm(self.checkpoints - flat[None], axis=1)
        nearest = int(np.argmin(distances))
        return {
            "nearest_checkpoint_distance": float(distances[nearest]),
            "nearest_checkpoint_concept": self.checkpoint_concepts[nearest],
            "nearest_checkpoint_row": nearest,
            "within_concept_spread": self.within_concept_spread(),
        }

    def within_concept_spread(self) -> float:
        """Median over training concepts of the mean pairwise L2 distance of its checkpoints."""
        if not hasattr(self, "_spread"):
            spreads = []
            for cid in self.data.concept_ids:
                rows = self.checkpoints[
                    [i for i, c in enumerate(self.checkpoint_concepts) if c == cid]
                ]
                if len(rows) > 1:
                    d = np.linalg.norm(rows[:, None] - rows[None], axis=-1)
                    spreads.append(float(d[np.triu_indices(len(rows), 1)].mean()))
            self._spread = float(np.median(spreads)) if spreads else float("nan")
        return self._spread


@dataclass
class Init:
    """A method's starting point for one (concept, seed)."""

    method: str
    seed: int
    state: dict[str, torch.Tensor] | None  # selected parameters; None = standard init/scratch
    seconds: float  # time to make it (0 for scratch and lora-zero)
    novelty: dict[str, float | str] | None = None  # predicted methods only


@functools.lru_cache(maxsize=4)
def distilled_student(out: Path, steps: int, fingerprint: str):
    """The `wgen distill` student for ``steps`` steps in the run folder ``out`` (loaded once
    per process), with its text encoder loaded before any timed generation."""
    from wgen.distill.stage import student_folder
    from wgen.generator.checkpoint import GeneratorFolderError, WeightGenerator

    folder, _ = student_folder(out, steps)
    try:
        student = WeightGenerator.load(folder)
    except GeneratorFolderError:
        raise InputFileError(
            folder,
            "no distilled student here (the wgen-distilled-* methods read it)",
            f"make it with `wgen distill --out {out}`, or leave those methods out with --methods",
        ) from None
    student.check_base(fingerprint)
    student.encoder  # noqa: B018 - τ loaded outside the timed generation
    return student


def initial_weights(
    method: str,
    seed: int,
    text: str,
    edits: tuple | None,
    baselines: Baselines,
    generator=None,
    ddim_steps: int = 10,
) -> Init:
    """The starting point ``method`` gives the concept ``text`` (timed). ``generator`` is a
    `wgen.generator.checkpoint.WeightGenerator` (its public `generate`), for wgen-*."""
    if method in (*SCRATCH_INITS, "lora-zero"):
        return Init(method, seed, None, 0.0)
    if method in GENERATED:
        if generator is None:
            raise ValueError(f"{method} needs a weight generator")
        steps = GENERATED[method] or ddim_steps
        guidance = baselines.config.distill.bench_guidance if method in GUIDED else None
        if method in DISTILLED:
            generator = distilled_student(baselines.out, steps, generator.fingerprint)
        state, seconds = generator.generate(text, steps, seed, guidance)
        flat = baselines.flat(state)
    else:
        embedding = baselines.embed([text])[text]  # cached: not part of the timed work
        start = time.perf_counter()
        flat = baselines.predict(method, embedding, edits)
        state = baselines.state(flat)
        seconds = time.perf_counter() - start
    return Init(method, seed, state, seconds, baselines.novelty(flat))
