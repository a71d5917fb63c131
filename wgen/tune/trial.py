"""One trial of `wgen tune`: Ray Train V2's Tune pattern (a function trainable that builds
and fits a TorchTrainer).

The trial sets its searched values on the search's base config and calls the **same driver**
as `wgen train` (`wgen.generator.fit.fit_generator`), under a Train run named after the trial
id in ``<out>/tune/ray_train/``. A trial that Tune resumes after an interrupted search keeps
its id, so its Train run restores its own latest checkpoint instead of starting over.

`ScoreReportCallback` forwards to Tune only the workers' reports that carry the score (the
quality evaluations), so every Tune iteration of a trial holds the b-independent metric
that ASHA compares; the plain epoch reports (denoising loss only) stay in Ray Train. Each
carries the number of evaluations done so far, ASHA's time axis, which a resumed trial
continues (Tune's own iteration count starts again at 1).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from wgen.config import Config

PROGRESS_FILE = "progress.jsonl"  # <out>/tune/progress.jsonl: one line per trial start
# Ray Train gives a worker group 60 s to start; trials starting theirs while other trials
# train took longer on a loaded 2-core machine (measured: every start timed out and retried
# forever). Ray Train passes this variable from the trial's process to its controller.
WORKER_START_TIMEOUT = ("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")


EVALUATION_KEY = "evaluation"  # ASHA's time axis: quality evaluations done, across resumes


class ScoreReportCallback(TuneReportCallback):
    """Tune's report callback, filtered to the reports that hold the config's metric, each
    with `EVALUATION_KEY` added (`wgen.tune.space.evaluations_through` its epoch)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config

    def after_report(self, run_context, metrics, checkpoint) -> None:
        from wgen.tune.space import evaluations_through

        if metrics and self.config.tune.metric in metrics[0]:
            epoch = int(metrics[0]["epoch"])
            metrics = [
                {**m, EVALUATION_KEY: evaluations_through(epoch, self.config.train)}
                for m in metrics
            ]
            super().after_report(run_context, metrics, checkpoint)


def log_trial_event(tune_dir: Path, event: str, **values: Any) -> None:
    """Append one JSON line; why: after an interrupted search it shows which process ran
    which trial (the resume test reads it to prove no finished trial ran twice)."""
    record = {"event": event, "pid": os.getpid(), "time": time.time(), **values}
    with (Path(tune_dir) / PROGRESS_FILE).open("a") as f:
        f.write(json.dumps(record) + "\n")


def read_trial_events(tune_dir: Path) -> list[dict[str, Any]]:
    path = Path(tune_dir) / PROGRESS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_trial(
    params: dict[str, Any], *, base: dict[str, Any], out: str, tune_dir: str, train_dir: str
) -> None:
    """The Tune function trainable: ``params`` are this trial's searched values."""
    import ray.tune

    from wgen.generator.fit import fit_generator
    from wgen.tune.space import trial_config

    config = trial_config(Config.from_dict(base), params)
    os.environ.setdefault(*WORKER_START_TIMEOUT)  # this trial actor's process only
    trial_id = ray.tune.get_context().get_trial_id()
    log_trial_event(Path(tune_dir), "start", trial_id=trial_id, params=params)
    fit_generator(
        config,
        Path(out),
        name=f"trial-{trial_id}",
        storage_path=Path(train_dir),
        callbacks=[ScoreReportCallback(config)],
    )
    log_trial_event(Path(tune_dir), "end", trial_id=trial_id)
