"""`wgen bench`: fine-tune held-out concepts from every method's initial weights, side by side.

1. `prepare_bench` (no Ray): the weights, the base GAN and the generator exist; the concept
   texts are ones the editor understands and not training concepts (those are flagged and
   left out); the bench folder was made with the same settings. Every user mistake is a
   one-line `WgenError` here, before Ray starts.
2. The driver fits the text baselines once, loads the generator through its public
   interface (`WeightGenerator.load` + `generate`), and makes every missing (concept,
   method, seed) run's initial weights, timed.
3. A Ray actor pool fine-tunes: one concept (all its methods and seeds) per actor call, so
   one concept's timings share a process, its threads and its pairs. Every run goes through
   `wgen.gan.training.train_until_converged` (the collection's loop) under the bench's rule,
   with a cheap paired L1 every `bench.eval_every` steps and the Fréchet distance at the end.
   Each concept's pairs are cut in three (`bench_split`): training pairs, *selection* pairs
   (the only ones the rule and the restoring of the best model read) and *test* pairs (read
   only for the report: the curve's test column and the restored model's final score).
4. Each finished run is written at once to ``<out>/bench/runs/<concept>/<method>__s<seed>.json``
   and never redone; `wgen.bench.report` turns them into results.json, report.md and plots.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from wgen.bench.methods import (
    METHODS,
    SCRATCH_INITS,
    BaselineRecipe,
    Baselines,
    initial_weights,
)
from wgen.config import Config, DataConfig
from wgen.core.errors import ConfigError, InputFileError, Interrupted, RunFolderError
from wgen.core.integrity import verify_inputs
from wgen.core.runfolder import (
    command_args,
    fingerprint,
    mismatch_message,
    read_success,
    record_matches,
    stage_fields,
)
from wgen.core.runtime import init_ray, print0, read_json, write_json
from wgen.core.storage import RunStorage
from wgen.data.concepts import Concept
from wgen.data.pairs import CONCEPTS_FILE, load_concepts, pairs_done, read_pairs
from wgen.gan.convergence import GrowingWindowMonitor
from wgen.gan.training import ConceptPairs, concept_pairs, concept_seed
from wgen.models.base import BASE_DIR, BASE_FILE, base_family

BENCH_DIR = "bench"
# The fine-tuning loop below (pix2pix `train_lora` / `train_scratch` on image pairs, the
# paired-L1 probe) is the GAN's own; the initial weights it starts from are made through the
# base-model protocol (`wgen.bench.methods`), so another family needs only a loop of its own.
FINE_TUNED_FAMILY = "gan"
RUNS_DIR = "runs"
RECORD_FILE = "_RECORD.json"
# Fields that only spread the work or choose what to run; a bench folder is continued
# (more concepts, methods or seeds) when only these change.
NOT_FINGERPRINTED = {
    "methods",
    "concepts_file",
    "max_concepts",
    "seeds",
    "actors",
    "cpus_per_actor",
    "budgets",
    "auc_steps",
    "grid_step",
    "clock",
}


@dataclasses.dataclass
class BenchConcept:
    """A concept to benchmark: its text, edit program (None if the editor has none) and pairs."""

    concept_id: str
    text: str
    edits: tuple | None
    pairs: ConceptPairs  # as the pairs stage split them: training + held-back (test) pairs
    kind: str = ""  # held-out kind: "combination" | "paraphrase" ("" for --concepts texts)


@dataclasses.dataclass
class BenchSplit:
    """One concept's pairs in the bench's three splits.

    ``fitting`` is what the training loop sees: its training pairs, and the selection pairs
    as its evaluation pairs (the rule and the best-model restore read only those). The test
    pairs are the collection's held-back pairs, which no rule or selection ever reads.
    """

    fitting: ConceptPairs
    test_sources: np.ndarray
    test_targets: np.ndarray


def bench_split(pairs: ConceptPairs, selection_pairs: int) -> BenchSplit:
    """Cut the last ``selection_pairs`` training pairs off as selection pairs; the held-back
    pairs become the test pairs. Deterministic: the pairs are already ordered by image id."""
    cut = len(pairs.train_sources) - selection_pairs
    if cut < 1:
        raise ValueError(
            f"concept {pairs.concept_id} has {len(pairs.train_sources)} training pairs; "
            f"bench.selection_pairs={selection_pairs} leaves none to train on"
        )
    fitting = ConceptPairs(
        pairs.concept_id,
        pairs.text,
        pairs.split,
        pairs.train_sources[:cut],
        pairs.train_targets[:cut],
        pairs.train_sources[cut:],
        pairs.train_targets[cut:],
    )
    return BenchSplit(fitting, pairs.eval_sources, pairs.eval_targets)


@dataclasses.dataclass
class BenchPlan:
    """Everything `prepare_bench` checked, for the run."""

    out: Path
    folder: Path
    methods: list[str]
    concepts: list[BenchConcept]
    flagged: list[dict[str, str]]
    generator_dir: Path | None
    seeds: list[int]
    baselines_recipe: BaselineRecipe | None = None

    def run_path(self, concept_id: str, method: str, seed: int) -> Path:
        return run_path(self.folder, concept_id, method, seed)

    def todo(self) -> list[tuple[BenchConcept, str, int]]:
        return [
            (c, m, s)
            for c in self.concepts
            for m in self.methods
            for s in self.seeds
            if not self.run_path(c.concept_id, m, s).exists()
        ]


def run_path(folder: Path, concept_id: str, method: str, seed: int) -> Path:
    return Path(folder) / RUNS_DIR / concept_id / f"{method}__s{seed}.json"


def bench_fields(out: Path, config: Config, generator_dir: Path | None) -> dict[str, Any]:
    """What shapes a bench run's numbers: the weights it reads, the rule, the generator."""
    fields = stage_fields(config, "collect")
    for key, value in dataclasses.asdict(config.bench).items():
        if key not in NOT_FINGERPRINTED:
            fields[f"bench.{key}"] = value
    fields["generator"] = generator_field(
        out, Path(generator_dir).resolve() if generator_dir else None
    )
    return fields


def generator_field(out: Path, generator_dir: str | Path | None) -> str | None:
    """The generator as the bench record names it: relative to the run folder when it is
    inside it, so the record still matches from another host's staging copy of an s3://
    run folder (records written with the absolute path read the same way). A relative
    ``generator_dir`` is a name from a record, already relative to the run folder."""
    if not generator_dir:
        return None
    if not Path(generator_dir).is_absolute():  # already relative to the run folder
        return Path(generator_dir).as_posix()
    path = Path(generator_dir).resolve()
    try:
        return path.relative_to(Path(out).resolve()).as_posix()
    except ValueError:
        return str(path)


def bench_differences(out: Path, record: dict[str, Any], fields: dict[str, Any]) -> list[str]:
    """The fields in which a bench record differs from ``fields`` (none: the same bench).
    A bench that ran no generator method (its record names none) goes on with one: its runs
    do not depend on which generator is benched next."""
    recorded = generator_field(out, record["fields"].get("generator"))
    old = {**record["fields"], "generator": recorded or fields.get("generator")}
    if fingerprint(old) == fingerprint(fields):
        return []
    return [
        f"{k}: {old.get(k)!r} → {fields.get(k)!r}"
        for k in sorted(set(old) | set(fields))
        if old.get(k) != fields.get(k)
    ]


def file_concept_id(text: str) -> str:
    """A stable id for a concept text from --concepts (the same text, the same runs)."""
    return "f" + hashlib.sha1(text.encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------------------
# 1. Checks before Ray starts
# ---------------------------------------------------------------------------------------


def prepare_bench(
    config: Config, out: Path, overrides: list[str] | tuple = (), force: bool = False
) -> BenchPlan:
    """Check every input of the bench; raise a one-line `WgenError` on the first problem."""
    out = Path(out)
    # the hint names the command that makes a missing input: the bench's own flags are not its
    hint = command_args(config, out, [item for item in overrides if not item.startswith("bench.")])
    if not pairs_done(out):
        raise RunFolderError(
            f"bench needs the image pairs in {out / 'pairs'}; make them with `wgen pairs {hint}`"
        )
    weights = read_success(out, "collect")
    if weights is None or not (out / BASE_DIR / BASE_FILE).exists():
        raise RunFolderError(
            f"bench needs the collected weights in {out / 'weights'} and the base model in "
            f"{out / BASE_DIR}; make them with `wgen collect {hint}`"
        )
    family = base_family(out / BASE_DIR)
    if family != FINE_TUNED_FAMILY:
        raise ConfigError(
            f"wgen bench fine-tunes the {FINE_TUNED_FAMILY} base model only; "
            f"{out / BASE_DIR} holds the {family!r} family"
        )
    # every file the bench reads is the one its stage wrote (size, format, checksum)
    verify_inputs(out, "bench", hint)
    record = weights.get("record")
    if record is not None and not record_matches(record, config, "collect"):
        raise RunFolderError(
            mismatch_message(
                out / "weights",
                record,
                config,
                "collect",
                f"use --preset {record.get('preset')} (and the same --set values) to bench this run",
            )
        )
    bench = config.bench
    # lora-zero's converged test quality is every method's common target (scratch's, the
    # second one, only where scratch is benched)
    methods = list(dict.fromkeys(["lora-zero", *bench.methods]))
    generator_dir = None
    generator_train = config.train  # what the baselines follow when no generator is benched
    if any(m.startswith("wgen-") for m in methods):
        from wgen.generator.checkpoint import (
            CONFIG_YAML,
            GeneratorFolderError,
            check_generator_folder,
        )

        generator_dir = Path(bench.generator_dir) if bench.generator_dir else out / "generator"
        try:
            check_generator_folder(generator_dir)
        except GeneratorFolderError:
            raise InputFileError(
                generator_dir,
                "no complete generator folder there (the wgen-1 / wgen-ddim methods need one)",
                f"make it with `wgen train {hint}`, pass --generator DIR, or leave the wgen "
                "methods out with --methods",
            ) from None
        generator_train = Config.load(generator_dir / CONFIG_YAML).train
    recipe = BaselineRecipe.resolve(bench, generator_train, config.train)
    known = load_concepts(out / CONCEPTS_FILE)
    concepts, flagged = choose_concepts(config, out, known)
    if "nearest-edit" in methods and any(c.edits is None for c in concepts):
        raise ConfigError(
            "bench.methods: nearest-edit needs each concept's edit program, which only the "
            "procedural editor reads from the text; leave it out with --methods"
        )
    folder = out / BENCH_DIR
    fields = bench_fields(out, config, generator_dir)
    record_path = folder / RECORD_FILE
    if force and folder.exists():
        shutil.rmtree(folder)
    elif record_path.exists():
        diffs = bench_differences(out, read_json(record_path), fields)
        if diffs:
            raise RunFolderError(
                f"{folder} holds bench runs made with other settings ({'; '.join(diffs[:4])}); "
                "pass the same settings to continue, or --force to start the bench anew"
            )
    seeds = list(range(bench.seeds))
    return BenchPlan(out, folder, methods, concepts, flagged, generator_dir, seeds, recipe)


def read_concepts_file(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every non-empty, non-comment line."""
    if not path.is_file():
        raise InputFileError(path, "no such file (expected one concept text per line)")
    lines = [
        (n, line.strip())
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if not lines:
        raise InputFileError(path, "lists no concept text; write one held-out concept per line")
    return lines


def choose_concepts(
    config: Config, out: Path, known: list[Concept]
) -> tuple[list[BenchConcept], list[dict[str, str]]]:
    """The preset's held-out concepts, or the texts of bench.concepts_file (each checked with
    the editor; a training concept's text is flagged and left out). At most max_concepts."""
    bench = config.bench
    collected = {c.text.strip().lower(): c for c in known if c.split in ("train", "val")}
    flagged: list[dict[str, str]] = []
    if bench.concepts_file is None:
        chosen = heldout_mix([c for c in known if c.split == "heldout"], bench.max_concepts)
        if not chosen:
            raise RunFolderError(f"{out / CONCEPTS_FILE} lists no held-out concept to bench")
        frame = read_pairs(out, [c.id for c in chosen])
        by_id = {p.concept_id: p for p in concept_pairs(frame, config.collect)}
        return [BenchConcept(c.id, c.text, c.edits, by_id[c.id], c.kind) for c in chosen], flagged

    path = Path(bench.concepts_file)
    texts: list[tuple[str, tuple | None]] = []
    for n, text in read_concepts_file(path):
        edits = parse_text(config.data, path, n, text)
        twin = collected.get(text.lower())
        if twin is not None:
            flagged.append(
                {
                    "text": text,
                    "reason": f"line {n} is {split_word(twin.split)} concept of this run "
                    f"({twin.id}), not a held-out one",
                }
            )
            print0(f"bench: left out {text!r}: {flagged[-1]['reason']}")
            continue
        if text not in {t for t, _ in texts}:
            texts.append((text, edits))
    if not texts:
        raise ConfigError(
            f"--concepts {path}: every text is a training or validation concept "
            f"({'; '.join(f['text'] for f in flagged)}); list held-out concepts"
        )
    texts = texts[: bench.max_concepts]
    pairs = make_pairs(config, [(file_concept_id(t), t) for t, _ in texts])
    return [
        BenchConcept(file_concept_id(t), t, edits, p)
        for (t, edits), p in zip(texts, pairs, strict=True)
    ], flagged


def heldout_mix(heldout: list[Concept], count: int | None) -> list[Concept]:
    """``count`` held-out concepts (None = all), half unseen combinations and half unseen
    wordings: the first of each kind by id, in alternating order (the other kind fills in
    where one runs out). The bench runs concepts in this order, so a bench cut short has
    measured both kinds of generalisation alike."""
    kinds: dict[str, list[Concept]] = {}
    for concept in sorted(heldout, key=lambda c: c.id):
        kinds.setdefault(concept.kind, []).append(concept)
    queues = [list(v) for _, v in sorted(kinds.items())]
    count = len(heldout) if count is None else min(count, len(heldout))
    chosen: list[Concept] = []
    while len(chosen) < count:
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen


def split_word(split: str) -> str:
    return "a training" if split == "train" else "a validation"


def parse_text(data: DataConfig, path: Path, line: int, text: str) -> tuple | None:
    """The edit program of ``text`` (procedural editor); a text it cannot read is an error."""
    if data.editor != "procedural":
        return None
    from wgen.data.editors.procedural import UnknownWordsError, parse_edit

    try:
        return parse_edit(text)
    except UnknownWordsError as err:
        words = ", ".join(repr(w) for w in err.unknown)
        raise InputFileError(
            path,
            f"line {line} {text!r}: the {data.editor} editor does not know {words}",
            "`wgen vocabulary` lists the words it knows",
        ) from None
    except ValueError as err:
        raise InputFileError(path, f"line {line}: {err}") from None


def make_pairs(config: Config, concepts: list[tuple[str, str]]) -> list[ConceptPairs]:
    """Image pairs for concept texts no pairs stage made: seeded crops of the run's photos,
    edited by the configured editor, split like the collection's (last eval_pairs held back)."""
    from wgen.data.editors import build_editor
    from wgen.data.images import crop_pool, load_photos

    data = config.data
    crop_ids, crops = crop_pool(load_photos(data), data.image_size, data.crops_per_photo, data.seed)
    editor = build_editor(data)
    made = []
    for concept_id, text in concepts:
        rng = np.random.default_rng([data.seed, int(concept_id[1:], 16)])
        size = min(data.pairs_per_concept, len(crops))  # a user's few photos: every crop
        pick = np.sort(rng.choice(len(crops), size=size, replace=False))
        sources = crops[pick]
        targets = editor(sources, [text] * len(sources))
        cut = len(pick) - config.collect.eval_pairs
        made.append(
            ConceptPairs(
                concept_id, text, "file", sources[:cut], targets[:cut], sources[cut:], targets[cut:]
            )
        )
    return made


# ---------------------------------------------------------------------------------------
# 2-3. Initial weights in the driver, fine-tuning on the actor pool
# ---------------------------------------------------------------------------------------


def bench_rule(config: Config) -> Config:
    """The config the fine-tuning runs under: the collection's loop with the bench's
    evaluation schedule and cap (the rule itself is `bench_monitor`)."""
    bench = config.bench
    collect = dataclasses.replace(
        config.collect,
        eval_every=bench.eval_every,
        smooth=bench.smooth,
        max_steps=bench.max_steps,
        tolerance=bench.tolerance,
        min_delta=bench.min_delta,
    )
    return dataclasses.replace(config, collect=collect)


def bench_monitor(bench) -> GrowingWindowMonitor:
    """A fresh rule for one run: the same for every method (`bench.window_*`, tolerance)."""
    return GrowingWindowMonitor(
        eval_every=bench.eval_every,
        window_steps=bench.window_steps,
        window_fraction=bench.window_fraction,
        tolerance=bench.tolerance,
        smooth=bench.smooth,
        min_delta=bench.min_delta,
    )


class ProbeL1:
    """The cheap evaluation of the bench's curves: paired L1 and PSNR on the evaluation pairs
    of ``pairs`` (the selection pairs in the bench: `l1`, `psnr`, what the rule reads) and,
    when given, on the test pairs (`test_l1`, `test_psnr`: recorded for the report, never
    read by the rule). No Fréchet features. Keeps the latest generator (for the final score)
    and the outputs on the first test (else evaluation) images at the grid's steps."""

    def __init__(
        self,
        pairs: ConceptPairs,
        eval_every: int,
        keep_steps: set[int],
        show: int = 2,
        test: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.sources, self.targets = pairs.eval_sources, pairs.eval_targets
        self.test = test
        self.eval_every, self.keep_steps, self.show = eval_every, keep_steps, show
        self.calls = 0
        self.generator = None
        self.outputs: dict[int, np.ndarray] = {}

    def __call__(self, generator) -> dict[str, float]:
        from wgen.gan.metrics import generate_uint8, paired_l1, psnr

        step = self.calls * self.eval_every  # the loop evaluates at 0, e, 2e, ... (K = 0)
        self.calls += 1
        self.generator = generator
        predictions = generate_uint8(generator, self.sources)
        metrics = {
            "l1": paired_l1(predictions, self.targets),
            "psnr": psnr(predictions, self.targets),
        }
        shown = predictions
        if self.test is not None:
            tested = generate_uint8(generator, self.test[0])
            metrics["test_l1"] = paired_l1(tested, self.test[1])
            metrics["test_psnr"] = psnr(tested, self.test[1])
            shown = tested
        if step in self.keep_steps:
            self.outputs[step] = shown[: self.show]
        return metrics


class BenchWorker:
    """Ray actor: fine-tunes every (method, seed) of one concept per call, writing each run.

    GAN-specific (`FINE_TUNED_FAMILY`, checked in `prepare_bench`): it holds the `BaseGAN`
    itself, for pix2pix fine-tuning and the output comparison of a start with its nearest
    training checkpoint."""

    def __init__(self, config: dict[str, Any], out: str, folder: str, uri: str | None = None):
        import torch

        from wgen.gan.metrics import build_feature_extractor
        from wgen.gan.training import BaseGAN

        self.config = bench_rule(Config.from_dict(config))
        self.threads = self.config.gan.threads
        torch.set_num_threads(self.threads)
        # A run folder at a URI: the base GAN from there on a node without the driver's copy,
        # and each finished concept's runs uploaded there at once (see `wgen.core.storage`).
        self.storage = RunStorage(Path(out), uri)
        self.storage.fetch_missing([BASE_DIR])
        self.base = BaseGAN.load(Path(out) / BASE_DIR)
        self.folder = Path(folder)
        self.extractor = build_feature_extractor(self.config.collect.feature_extractor)

    def run_concept(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        from wgen.gan.training import Evaluator

        split = bench_split(job["pairs"], self.config.bench.selection_pairs)
        # the final score (L1, PSNR, Fréchet distance) of each run's restored model: test pairs
        final = Evaluator(split.test_sources, split.test_targets, self.extractor)
        folder = self.folder / RUNS_DIR / split.fitting.concept_id
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            folder / "pairs.npz", sources=split.test_sources[:2], targets=split.test_targets[:2]
        )
        records = [self.run_one(split, final, run) for run in job["runs"]]
        # each run's JSON last: a run with its JSON at the URI has its outputs there
        self.storage.upload(sorted(folder.iterdir(), key=lambda p: p.suffix == ".json"))
        return records

    def run_one(self, split: BenchSplit, final, run: dict[str, Any]) -> dict[str, Any]:
        from wgen.bench.curves import time_to_converge
        from wgen.gan.metrics import generate_uint8, paired_l1
        from wgen.gan.training import lora_generator, train_lora, train_scratch

        bench, init, pairs = self.config.bench, run["init"], split.fitting
        probe = ProbeL1(
            pairs,
            bench.eval_every,
            {0, bench.grid_step},
            test=(split.test_sources, split.test_targets),
        )
        seed = concept_seed(self.config.data.seed + init.seed, pairs.concept_id)
        if init.method in SCRATCH_INITS:
            result = train_scratch(
                self.config,
                pairs,
                self.extractor,
                seed,
                probe,
                SCRATCH_INITS[init.method],
                monitor=bench_monitor(bench),
            )
        else:
            result = train_lora(
                self.base,
                self.config,
                pairs,
                self.extractor,
                init.state,
                0,
                seed,
                probe,
                monitor=bench_monitor(bench),
            )
        novelty = dict(init.novelty) if init.novelty else None
        if novelty is not None and run.get("nearest_state") is not None:
            # In function space too: how differently the init and its nearest training
            # checkpoint edit the test images (paired L1 between the two outputs).
            outputs = [
                generate_uint8(lora_generator(self.base, self.config.lora, s), split.test_sources)
                for s in (init.state, run["nearest_state"])
            ]
            novelty["output_l1_to_nearest_checkpoint"] = paired_l1(*outputs)
        history = [
            {
                "step": int(h["step"]),
                "train_seconds": float(h["train_seconds"]),
                "l1": float(h["l1"]),
                "psnr": float(h["psnr"]),
                "test_l1": float(h["test_l1"]),
                "test_psnr": float(h["test_psnr"]),
            }
            for h in result.history
        ]
        end = history[-1]
        converged = result.converged_step
        when = time_to_converge(history, bench.smooth, bench.converge_delta) if converged else None
        record = {
            "concept_id": pairs.concept_id,
            "text": pairs.text,
            "method": init.method,
            "oracle": METHODS[init.method].oracle,
            "seed": init.seed,
            "status": result.status,
            "reason": result.reason,
            "converged_step": converged,  # the step at which the rule stopped the run
            "best_step": result.restored_step,  # the step of the model it ended with
            "steps": end["step"],
            "generation_seconds": init.seconds,
            "train_seconds": end["train_seconds"],
            # read after the run (bench.converge_delta); None = the rule never stopped it
            "steps_to_converge": None if when is None else when[0],
            "time_to_converge_s": None if when is None else init.seconds + when[1],
            "final": final(probe.generator),  # the restored best model on the TEST pairs
            "history": history,
            "novelty": novelty,
            "threads": self.threads,
        }
        path = run_path(self.folder, pairs.concept_id, init.method, init.seed)
        np.savez_compressed(
            path.with_suffix(".npz"), **{f"step{k}": v for k, v in probe.outputs.items()}
        )
        write_json(path, record)  # last: a run with its JSON is finished
        return record


def make_jobs(
    plan: BenchPlan, config: Config, baselines: Baselines | None, generator
) -> list[dict[str, Any]]:
    """One job per concept with work left: every missing run's initial weights (timed)."""
    from wgen.core.runtime import torch_threads

    by_concept: dict[str, dict[str, Any]] = {}
    with torch_threads(config.generate.threads):
        if generator is not None:
            generator.encoder  # noqa: B018 - load τ before any timed generation
        for concept, method, seed in plan.todo():
            init = initial_weights(
                method,
                seed,
                concept.text,
                concept.edits,
                baselines,
                generator,
                config.bench.ddim_steps,
            )
            nearest = None
            if init.novelty is not None:
                nearest = baselines.state(
                    baselines.checkpoints[init.novelty["nearest_checkpoint_row"]]
                )
            job = by_concept.setdefault(concept.concept_id, {"pairs": concept.pairs, "runs": []})
            job["runs"].append({"init": init, "nearest_state": nearest})
    return list(by_concept.values())


def run_bench(
    config: Config,
    out: Path,
    force: bool = False,
    overrides: list[str] | tuple = (),
    storage: RunStorage | None = None,
) -> dict[str, Any]:
    """Check, make the initial weights, fine-tune on the actor pool, write the results.
    ``storage``: the run folder at a URI, whose staging copy ``out`` is."""
    import torch

    from wgen.bench.report import write_results
    from wgen.models.base import load_base_model

    start = time.perf_counter()
    plan = prepare_bench(config, Path(out), list(overrides), force)
    plan.folder.mkdir(parents=True, exist_ok=True)
    fields = bench_fields(plan.out, config, plan.generator_dir)
    write_json(plan.folder / RECORD_FILE, {"fingerprint": fingerprint(fields), "fields": fields})
    config.save(plan.folder / "config.yaml")  # inside bench/: nothing else of DIR is touched
    todo = plan.todo()
    total = len(plan.concepts) * len(plan.methods) * len(plan.seeds)
    print0(
        f"bench: {len(plan.concepts)} concept(s) × {len(plan.methods)} method(s) × "
        f"{len(plan.seeds)} seed(s) = {total} runs, {total - len(todo)} already finished, "
        f"{len(todo)} to run → {plan.folder}"
    )
    baselines = generator = None
    if todo:
        torch.set_num_threads(config.gan.threads)
        base = load_base_model(plan.out / BASE_DIR, config)
        needed = sorted({m for _, m, _ in todo})
        recipe = plan.baselines_recipe
        baselines = Baselines.fit(
            plan.out,
            config,
            base,
            needed,
            recipe,
            config.bench.ridge_alpha,
            config.bench.knn_k,
            cache_dir=plan.folder,
        )
        print0(
            f"bench: text baselines fitted on {len(baselines.data.concept_ids)} training "
            f"concepts × {1 + recipe.paraphrases} wordings in {baselines.fit_seconds:.1f} s "
            f"(hyper: {recipe.hyper_epochs} epochs, {recipe.hyper_lr_schedule} rate"
            f"{', read from its cache' if baselines.hyper_from_cache else ''})"
        )
        if any(m.startswith("wgen-") for m in needed):
            from wgen.generator.checkpoint import WeightGenerator

            generator = WeightGenerator.load(plan.generator_dir)
            generator.check_base(base.fingerprint)
        jobs = make_jobs(plan, config, baselines, generator)
        storage = storage or RunStorage(Path(out))
        try:
            try:
                fine_tune(config, plan, jobs, storage.uri)
            finally:  # the runs workers on other nodes uploaded
                storage.pull([f"{BENCH_DIR}/{RUNS_DIR}"], merge=True)
        except KeyboardInterrupt:
            done = total - len(plan.todo())
            raise Interrupted(
                f"interrupted; {done} of {total} bench runs finished (kept in {plan.folder}), "
                "re-run the same command to resume"
            ) from None
    results = write_results(plan, config, hardware(config), time.perf_counter() - start)
    return results


def fine_tune(
    config: Config, plan: BenchPlan, jobs: list[dict[str, Any]], uri: str | None = None
) -> None:
    """Run the jobs on a pool of `bench.actors` actors, one line per finished concept."""
    import ray
    from ray.util import ActorPool

    init_ray()
    bench = config.bench
    worker = ray.remote(num_cpus=bench.cpus_per_actor, num_gpus=bench.gpus_per_actor or None)(
        BenchWorker
    )
    actors = [
        worker.remote(config.to_dict(), str(plan.out), str(plan.folder), uri)
        for _ in range(min(bench.actors, len(jobs)))
    ]
    pool = ActorPool(actors)
    start = time.perf_counter()
    try:
        finished = 0
        for records in pool.map_unordered(lambda a, job: a.run_concept.remote(job), jobs):
            finished += 1
            elapsed = time.perf_counter() - start
            eta = elapsed / finished * (len(jobs) - finished)
            first = records[0]
            line = ", ".join(
                f"{r['method']}/s{r['seed']} {r['final']['l1']:.3f}"
                + ("" if r["converged_step"] else " (not converged)")
                for r in records
            )
            print0(
                f"bench: [{finished}/{len(jobs)}] {first['concept_id']} {first['text']!r}: "
                f"final L1 {line}; {elapsed:.0f} s, ETA {eta:.0f} s"
            )
    finally:
        for actor in actors:
            ray.kill(actor)


def hardware(config: Config) -> dict[str, Any]:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads_per_run": config.gan.threads,
        "generation_threads": config.generate.threads,
        "actors": config.bench.actors,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
