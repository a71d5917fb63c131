"""Stage 4b: `wgen tune`, the Ray Tune search over generator settings (b, d, lr, ...).

Driver. `run_tune(config, out)` checks ``tune.space`` before Ray starts (`wgen.tune.space`),
then runs a `Tuner` over the trial function (`wgen.tune.trial.run_trial`: a TorchTrainer
through the same driver as `wgen train`), with `tune.with_resources` for the trial's driver
and `tune.max_concurrent_trials` trials at a time; the workers' resources come from the
``train`` section, so the same search runs on 2 cores and on a GPU cluster. ASHA
stops trials early on the b-independent score (``tune.metric``); its time axis is the
number of quality evaluations a trial has made (``time_attr="evaluation"``, not Tune's
``training_iteration``, which restarts at 1 when a trial resumes). A progress line per finished trial
shows the best so far.

Resuming. The Tune experiment lives in ``<out>/tune/ray_tune/search``; a search interrupted
(Ctrl+C, a killed job) is picked up by running the same command again
(`Tuner.restore(path, trainable=...)`): finished trials are kept, unfinished ones continue
from their Train run's latest checkpoint. A search with other settings on the same folder
is refused (``--force`` starts over).

Outputs: ``<out>/tune/`` results.csv, report.md, score_vs_b.png, latency_vs_b.png,
best.json (for `wgen train --from-tune`), search.json and _SUCCESS.json.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from wgen.config import Config, ConfigError
from wgen.core.errors import Interrupted
from wgen.core.integrity import verify_inputs
from wgen.core.runfolder import command_args, fingerprint, without_later_fields_off
from wgen.core.runtime import (
    SUCCESS_FILE,
    init_ray,
    print0,
    read_json,
    releasing_orphaned_placement_groups,
    torch_threads,
    write_json,
)
from wgen.tune.results import (
    COMPLETED,
    ERROR,
    STOPPED,
    TUNE_DIR,
    UNFINISHED,
    TrialRow,
    median,
    trial_status,
    write_outputs,
)
from wgen.tune.space import (
    Param,
    describe,
    finite,
    grid_points,
    iterations_per_trial,
    n_trials,
    parse_space,
    to_tune_space,
)
from wgen.tune.trial import EVALUATION_KEY, run_trial

SEARCH_FILE = "search.json"  # <out>/tune/search.json: the settings of the search in this folder
EXPERIMENT = "search"  # Tune's experiment name under <out>/tune/ray_tune/
TUNE_STORAGE = "ray_tune"
TRAIN_STORAGE = "ray_train"  # <out>/tune/ray_train/trial-<id>: each trial's Train run
# Settings that change how a search runs, not what it finds: they may differ on a resume.
EXECUTION_ONLY = ("max_concurrent_trials", "trial_cpus", "latency_repeats")
LATENCY_TEXT = "a strong sepia tone with a soft vignette"  # any text: b sets the cost, not it


class SearchConflictError(ConfigError):
    """``<out>/tune`` holds a search with other settings."""


class SearchInterrupted(Interrupted):
    """The search stopped before every trial finished; running it again resumes it."""


def search_fingerprint(config: Config) -> tuple[str, dict[str, Any]]:
    """A digest of everything that shapes the trials (not the execution-only tune fields)."""
    values = without_later_fields_off(config.to_dict())  # older searches keep resuming
    values.pop("preset", None)
    for key in EXECUTION_ONLY:
        values["tune"].pop(key, None)
    return fingerprint(values), values


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "space":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_search_folder(tune_dir: Path, config: Config, force: bool) -> str:
    """Refuse a folder holding another search (unless ``force``, which clears it)."""
    digest, values = search_fingerprint(config)
    path = tune_dir / SEARCH_FILE
    if force and tune_dir.exists():
        shutil.rmtree(tune_dir)
    if path.exists():
        recorded = read_json(path)
        if recorded["fingerprint"] != digest:
            old, new = _flat(recorded["values"]), _flat(values)
            differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            raise SearchConflictError(
                f"{tune_dir} holds a search with other settings (differs in {differ}); "
                "use --force to start over, or another --out"
            )
    return digest


def _trial_rows(grid, config: Config, params: list[Param]) -> list[TrialRow]:
    """Tune's results as plain rows (the latency is measured afterwards)."""
    searched = [p.key for p in params]
    fixed = {
        "denoiser.block_size": config.denoiser.block_size,
        "denoiser.index_dim": config.denoiser.index_dim,
        "train.lr": config.train.lr,
    }
    rows = []
    for result in grid:
        metrics = dict(result.metrics or {})
        trial_id = metrics.get("trial_id") or Path(result.path).name
        trial_params = {**fixed, **{k: result.config[k] for k in searched if k in result.config}}
        epochs = trial_params.get("train.epochs", config.train.epochs)
        score = metrics.get(config.tune.metric, math.nan)
        rows.append(
            TrialRow(
                trial_id=trial_id,
                params=trial_params,
                score=float(score) if finite(score) else math.nan,
                val_loss=float(metrics.get("val_loss", math.nan)),
                # (a search started before this key existed counted Tune's iterations)
                iterations=int(metrics.get(EVALUATION_KEY, metrics.get("training_iteration", 0))),
                epochs=int(metrics.get("epoch", 0)),
                status=trial_status(metrics, result.error is not None, epochs),
                seconds=float(metrics.get("time_total_s", math.nan)),
                error=str(result.error).splitlines()[0] if result.error else "",
            )
        )
    return rows


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted(p for p in Path(run_dir).glob("checkpoint_*") if p.is_dir())
    return checkpoints[-1] if checkpoints else None


def generation_latency(checkpoint: Path, repeats: int, embeddings: dict[str, Any]) -> float:
    """Median milliseconds of one 1-step generation (denoise all N blocks, un-chunk) with the
    generator of ``checkpoint``; the text embedding (the same for every b) is left out and
    cached per text encoder in ``embeddings``."""
    from wgen.generator.checkpoint import WeightGenerator

    generator = WeightGenerator.load(checkpoint)
    with torch_threads(generator.config.generate.threads):
        if generator.text_encoder not in embeddings:
            embeddings[generator.text_encoder] = generator.embed(LATENCY_TEXT)
        embedding = embeddings[generator.text_encoder]
        generator.generate_from_embedding(embedding, steps=1)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            generator.generate_from_embedding(embedding, steps=1)
            times.append(time.perf_counter() - start)
    return median(times) * 1000


class TrialProgress(Callback):
    """A Tune callback: one line per finished trial with the best so far.

    Stateless (everything is read from Tune's trial list), because Tune pickles callbacks
    with the experiment and restores them on a resume.
    """

    def __init__(self, metric: str, mode: str, searched: list[str], total: int, epochs: int):
        self.metric, self.mode, self.searched = metric, mode, searched
        self.total, self.epochs = total, epochs

    def _params(self, trial) -> str:
        return ", ".join(f"{k.split('.')[-1]}={trial.config.get(k)}" for k in self.searched)

    def _line(self, trials, trial, what: str) -> str:
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1
        scored = [t for t in trials if self.metric in (t.last_result or {})]
        best = (min if self.mode == "min" else max)(
            scored, key=lambda t: t.last_result[self.metric], default=None
        )
        text = f"tune: trial {done}/{self.total} {trial.trial_id} ({self._params(trial)}) {what}"
        if best is not None:
            text += (
                f" · best so far {best.last_result[self.metric]:.4f} "
                f"({self._params(best)}, {best.trial_id})"
            )
        return text

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        epoch = result.get("epoch", 0)
        how = "all epochs" if epoch >= self.epochs else f"stopped by ASHA at epoch {epoch}"
        score = result.get(self.metric, math.nan)
        print0(
            self._line(
                trials, trial,
                f"{self.metric} {score:.4f} after {result.get(EVALUATION_KEY, 0)} "
                f"iteration(s), {how}, {result.get('time_total_s', math.nan):.0f} s",
            )
        )  # fmt: skip

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        print0(self._line(trials, trial, "failed (see results.csv)"))


def _tuner(config: Config, out: Path, tune_dir: Path, params: list[Param], total: int):
    """A new Tuner, or the interrupted search in this folder restored."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    settings = config.tune
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            base=config.to_dict(),
            out=str(out),
            tune_dir=str(tune_dir),
            train_dir=str(tune_dir / TRAIN_STORAGE),
        ),
        {"CPU": settings.trial_cpus},
    )
    path = tune_dir / TUNE_STORAGE / EXPERIMENT
    if tune.Tuner.can_restore(str(path)):
        print0(f"tune: resuming the interrupted search in {path}")
        return tune.Tuner.restore(
            str(path), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    scheduler = ASHAScheduler(
        time_attr=EVALUATION_KEY,
        max_t=iterations_per_trial(config),
        grace_period=min(settings.grace_period, iterations_per_trial(config)),
        reduction_factor=settings.reduction_factor,
    )
    return tune.Tuner(
        trainable,
        param_space=to_tune_space(params),
        tune_config=tune.TuneConfig(
            metric=settings.metric,
            mode=settings.mode,
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(
                max_concurrent=settings.max_concurrent_trials, random_state=settings.seed
            ),
            num_samples=settings.num_samples,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=str(tune_dir / TUNE_STORAGE),
            callbacks=[
                TrialProgress(
                    settings.metric,
                    settings.mode,
                    [p.key for p in params],
                    total,
                    config.train.epochs,
                )
            ],  # fmt: skip
            verbose=0,
        ),
    )


def run_tune(
    config: Config, out: Path, overrides: list[str] | None = None, force: bool = False
) -> dict[str, Any]:
    """Run (or resume) the search on ``<out>/weights``; write ``<out>/tune/``.

    ``overrides`` are the ``--set`` values the config was built with: best.json records them
    so that `wgen train --from-tune` rebuilds the best trial's config exactly.
    """
    from wgen.weights.store import WeightStore

    params = parse_space(config)  # bad input fails here, before Ray starts
    out = Path(out).resolve()
    verify_inputs(out, "tune", command_args(config, out, overrides or []))
    WeightStore(out).manifest()  # a missing weight dataset fails here, naming `wgen collect`
    tune_dir = out / TUNE_DIR
    digest = check_search_folder(tune_dir, config, force)
    done = tune_dir / SUCCESS_FILE
    if done.exists():
        summary = read_json(done)
        print0(
            f"tune: {tune_dir} is complete ({summary['trials']} trials); skipping (--force redoes it)"
        )
        return summary
    tune_dir.mkdir(parents=True, exist_ok=True)
    search_path = tune_dir / SEARCH_FILE
    record = read_json(search_path) if search_path.exists() else {"sessions": []}
    record.update(fingerprint=digest, values=search_fingerprint(config)[1])
    write_json(search_path, record)

    total = n_trials(params, config.tune.num_samples)
    full = total * iterations_per_trial(config)
    print0(
        f"tune: {describe(params)}: {total} trials of up to {iterations_per_trial(config)} "
        f"score report(s) each, {config.tune.max_concurrent_trials} at a time, "
        f"ranked by {config.tune.metric} ({config.tune.mode}) → {tune_dir}"
    )
    init_ray()
    start = time.perf_counter()
    with releasing_orphaned_placement_groups():  # what ASHA's stopped trials leave reserved
        grid = _tuner(config, out, tune_dir, params, total).fit()
    seconds = time.perf_counter() - start
    record["sessions"].append(round(seconds, 2))
    write_json(search_path, record)
    rows = _trial_rows(grid, config, params)
    # Against the planned count, not len(grid): the search generator creates trials only as
    # slots free up, so an interrupted grid lacks the trials not yet started; and Tune can mark
    # trials it stopped on Ctrl-C as terminated, which leaves them unfinished here (measured:
    # searches stopped with 3 of 8 trials created, and with 2 of 8 running, were reported
    # complete).
    finished = sum(row.status != UNFINISHED for row in rows)
    if finished < total:
        raise SearchInterrupted(
            f"tune: search interrupted with {finished} of {total} trials finished; "
            "run the same command again to resume it"
        )
    embeddings: dict[str, Any] = {}
    for row in rows:
        checkpoint = latest_checkpoint(tune_dir / TRAIN_STORAGE / f"trial-{row.trial_id}")
        if checkpoint is not None:
            row.latency_ms = generation_latency(checkpoint, config.tune.latency_repeats, embeddings)
    grid_defaults = {
        key: value
        for key, value in _flat(config.to_dict()).items()
        if any(p.key == key and p.is_grid for p in params)
    }
    summary = {
        "metric": config.tune.metric,
        "mode": config.tune.mode,
        "space": describe(params),
        "searched": [p.key for p in params],
        "preset": config.preset,
        "overrides": list(overrides or []),
        "trials": total,
        "grid_points": len(grid_points(params)),
        "wall_seconds": sum(record["sessions"]),
        "sessions": len(record["sessions"]),
        "max_concurrent_trials": config.tune.max_concurrent_trials,
        "grace_period": config.tune.grace_period,
        "reduction_factor": config.tune.reduction_factor,
        "iterations_full": full,
        "iterations_used": sum(r.iterations for r in rows),
        "stopped": sum(r.status == STOPPED for r in rows),
        "completed": sum(r.status == COMPLETED for r in rows),
        "errors": sum(r.status == ERROR for r in rows),
    }
    frame = write_outputs(tune_dir, rows, summary, grid_defaults)
    if frame["score"].notna().any():
        summary["best"] = json.loads(frame.iloc[[0]].to_json(orient="records"))[0]
    write_json(done, summary)
    print0(
        f"tune: {total} trials in {summary['wall_seconds']:.0f} s "
        f"({summary['iterations_used']}/{full} trial-iterations, {summary['stopped']} stopped "
        f"early, {summary['errors']} failed); best {summary.get('best')} → {tune_dir / 'report.md'}"
    )
    return summary
