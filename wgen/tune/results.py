"""What a finished search leaves in ``<out>/tune/``: results.csv, report.md, plots, best.json.

`TrialRow` is one trial, as plain values (taken from Tune's results by the driver). The
writers below are pure functions of those rows, so they are tested without Ray. The best
trial's settings go to ``best.json`` in the form `wgen train --from-tune DIR` reads back:
the search's preset, its ``--set`` values, and the searched values of the best trial.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from wgen.config import ConfigError
from wgen.core.errors import InputFileError
from wgen.core.runtime import atomic_write_bytes, read_json, write_json

RESULTS_FILE = "results.csv"
REPORT_FILE = "report.md"
BEST_FILE = "best.json"
SCORE_PLOT = "score_vs_b.png"
LATENCY_PLOT = "latency_vs_b.png"
TUNE_DIR = "tune"  # <out>/tune

# The three searched keys the issue names get short columns; any other searched key keeps
# its dotted name.
SHORT_NAMES = {"denoiser.block_size": "b", "denoiser.index_dim": "d", "train.lr": "lr"}

COMPLETED, STOPPED, ERROR, UNFINISHED = "completed", "stopped early", "error", "unfinished"


@dataclass
class TrialRow:
    """One trial of a search, as the report shows it."""

    trial_id: str
    params: dict[str, Any]  # every key of SHORT_NAMES plus every searched key → its value
    score: float = math.nan  # the last reported `tune.metric`
    val_loss: float = math.nan  # the validation denoising loss at that report
    iterations: int = 0  # quality evaluations made (ASHA's time axis)
    epochs: int = 0  # epochs trained when the trial ended
    status: str = UNFINISHED  # COMPLETED, STOPPED (by ASHA), ERROR or UNFINISHED
    seconds: float = math.nan  # the trial's wall time (Tune's time_total_s)
    latency_ms: float = math.nan  # median 1-step generation time of its generator
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def trial_status(metrics: dict[str, Any], errored: bool, epochs: int) -> str:
    if errored:
        return ERROR
    if not metrics or "epoch" not in metrics:
        return UNFINISHED
    return COMPLETED if metrics["epoch"] >= epochs else STOPPED


def results_frame(rows: Sequence[TrialRow], searched: Sequence[str], mode: str) -> pd.DataFrame:
    """One row per trial, best score first (unscored trials last)."""
    records = []
    for row in rows:
        record: dict[str, Any] = {"trial_id": row.trial_id}
        for key, value in row.params.items():
            record[SHORT_NAMES.get(key, key)] = value
        record.update(
            score=row.score, val_loss=row.val_loss, iterations=row.iterations,
            epochs=row.epochs, status=row.status, seconds=row.seconds,
            latency_ms=row.latency_ms,
        )  # fmt: skip
        records.append(record)
    columns = (
        ["trial_id", "b", "d", "lr"]
        + [k for k in searched if k not in SHORT_NAMES]
        + ["score", "val_loss", "iterations", "epochs", "status", "seconds", "latency_ms"]
    )
    frame = pd.DataFrame.from_records(records, columns=columns)
    return frame.sort_values("score", ascending=(mode == "min"), na_position="last").reset_index(
        drop=True
    )


def write_results_csv(frame: pd.DataFrame, path: Path) -> Path:
    atomic_write_bytes(path, frame.to_csv(index=False, float_format="%.6g").encode())
    return path


def default_trial(frame: pd.DataFrame, grid_defaults: dict[str, Any]) -> pd.Series | None:
    """The trial whose grid values are the base config's (sampled keys ignored), if any."""
    if not grid_defaults:
        return None
    match = pd.Series(True, index=frame.index)
    for key, value in grid_defaults.items():
        match &= frame[SHORT_NAMES.get(key, key)] == value
    scored = frame[match & frame["score"].notna()]
    return None if scored.empty else scored.iloc[0]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _relative(better: float, worse: float) -> str:
    return f"{abs(worse - better):.4g} ({abs(worse - better) / abs(worse) * 100:.1f}%)"


def report_markdown(
    frame: pd.DataFrame,
    summary: dict[str, Any],
    grid_defaults: dict[str, Any],
) -> str:
    """report.md: what was searched, the figures the issue asks for, the sorted table."""
    metric, mode = summary["metric"], summary["mode"]
    scored = frame[frame["score"].notna()]
    lines = [
        "# wgen tune: search report",
        "",
        f"- space: {summary['space']} ({summary['trials']} trials, preset `{summary['preset']}`)",
        f"- score: `{metric}` ({'lower' if mode == 'min' else 'higher'} is better): GAN quality "
        "with LoRA generated in 1 step, on the validation concepts (does not depend on b)",
        f"- wall time: {summary['wall_seconds']:.0f} s over {summary['sessions']} session(s), "
        f"{summary['max_concurrent_trials']} trial(s) at a time",
        f"- ASHA (grace {summary['grace_period']}, η = {summary['reduction_factor']:g}): "
        f"{summary['iterations_used']} trial-iterations of the full grid's "
        f"{summary['iterations_full']} ({summary['iterations_used'] / max(1, summary['iterations_full']) * 100:.0f}%); "
        f"{summary['stopped']} trial(s) stopped early",
    ]
    if not scored.empty:
        best, worst = scored.iloc[0], scored.iloc[-1]
        searched = [SHORT_NAMES.get(k, k) for k in summary["searched"]]
        where = ", ".join(f"{k} = {_fmt(best[k])}" for k in searched)
        lines.append(f"- best: {where}: score {best['score']:.4g}")
        lines.append(
            f"- best vs worst ({worst['trial_id']}): better by {_relative(best['score'], worst['score'])}"
            f"{_epochs_note(best, worst)}"
        )
        default = default_trial(frame, grid_defaults)
        if default is None:
            lines.append("- best vs default: the default's grid values were not in the space")
        else:
            lines.append(
                f"- best vs default ({', '.join(f'{SHORT_NAMES.get(k, k)} = {v}' for k, v in grid_defaults.items())}; "
                f"{default['trial_id']}): better by {_relative(best['score'], default['score'])}"
                f"{_epochs_note(best, default)}"
            )
    latency = frame[frame["latency_ms"].notna()].groupby("b")["latency_ms"].median()
    if not latency.empty:
        lines.append(
            "- generation latency (1 step, median): "
            + ", ".join(f"b = {b}: {ms:.1f} ms" for b, ms in latency.items())
        )
    lines += ["", "| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_fmt(v) for v in row.tolist()) + " |")
    lines += ["", f"![score against b]({SCORE_PLOT})", f"![latency against b]({LATENCY_PLOT})", ""]
    return "\n".join(lines)


def _epochs_note(best: pd.Series, other: pd.Series) -> str:
    """Said where two scores were taken at different epochs (ASHA stopped one early): the
    difference then mixes the settings with the training time."""
    if best["epochs"] == other["epochs"]:
        return ""
    return (
        f" (scored at {best['epochs']} vs {other['epochs']} epochs, ASHA stopped the other "
        "early: the settings and the training time both differ; re-run it to full length)"
    )


def plot_results(frame: pd.DataFrame, folder: Path, metric: str) -> list[Path]:
    """Score against b, one line per d, each trial's epochs beside its point (a trial ASHA
    stopped early is scored at fewer epochs: drawn hollow); generation latency against b."""
    import matplotlib.pyplot as plt

    from wgen.core.plots import save_figure

    paths = []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    scored = frame[frame["score"].notna()]
    for d, group in scored.groupby("d"):
        means = group.groupby("b")["score"].mean()
        (line,) = ax.plot(means.index, means.values, lw=1, label=f"d = {d}")
        color = line.get_color()
        faces = ["none" if status == STOPPED else color for status in group["status"]]
        ax.scatter(group["b"], group["score"], s=30, edgecolors=color, facecolors=faces)
        for _, row in group.iterrows():
            ax.annotate(f"{row['epochs']}", (row["b"], row["score"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("block size b")
    ax.set_ylabel(metric)
    ax.set_title("score against b (label: epochs; hollow: stopped early by ASHA)", fontsize=9)
    if not scored.empty:
        ax.legend()
    paths.append(save_figure(fig, Path(folder) / SCORE_PLOT))

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    timed = frame[frame["latency_ms"].notna()]
    ax.scatter(timed["b"], timed["latency_ms"], s=14)
    if not timed.empty:
        median = timed.groupby("b")["latency_ms"].median()
        ax.plot(median.index, median.values, marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("block size b")
    ax.set_ylabel("1-step generation, ms")
    ax.set_title("generation latency against b")
    paths.append(save_figure(fig, Path(folder) / LATENCY_PLOT))
    return paths


def best_record(
    frame: pd.DataFrame, rows: Sequence[TrialRow], summary: dict[str, Any]
) -> dict[str, Any] | None:
    """What `wgen train --from-tune` needs: the search's preset and --set, the best params."""
    scored = frame[frame["score"].notna()]
    if scored.empty:
        return None
    best_id = scored.iloc[0]["trial_id"]
    row = next(r for r in rows if r.trial_id == best_id)
    return {
        "trial_id": best_id,
        "metric": summary["metric"],
        "score": row.score,
        "preset": summary["preset"],
        "overrides": summary["overrides"],
        "params": {k: row.params[k] for k in summary["searched"]},
    }


def write_outputs(
    folder: Path, rows: Sequence[TrialRow], summary: dict[str, Any], grid_defaults: dict[str, Any]
) -> pd.DataFrame:
    """results.csv, report.md, the two plots and best.json in ``folder``."""
    frame = results_frame(rows, summary["searched"], summary["mode"])
    write_results_csv(frame, Path(folder) / RESULTS_FILE)
    plot_results(frame, Path(folder), summary["metric"])
    report = report_markdown(frame, summary, grid_defaults)
    atomic_write_bytes(Path(folder) / REPORT_FILE, report.encode())
    best = best_record(frame, rows, summary)
    if best is not None:
        write_json(Path(folder) / BEST_FILE, best)
    return frame


def rows_to_json(rows: Sequence[TrialRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


# ---------------------------------------------------------------------------------------
# `wgen train --from-tune DIR`
# ---------------------------------------------------------------------------------------


def _setting(value: Any) -> str:
    """A value as `--set` text that `wgen.config` reads back exactly (repr keeps floats)."""
    return repr(value) if isinstance(value, float) else str(value)


def best_overrides(path: Path) -> tuple[str, list[str]]:
    """(the search's preset, its --set values + the best trial's searched values as --set).

    ``path`` is a run folder (``wgen tune --out DIR``) or its ``tune/`` folder.
    """
    path = Path(path)
    candidates = [path / TUNE_DIR / BEST_FILE, path / BEST_FILE]
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        raise InputFileError(
            path / TUNE_DIR / BEST_FILE,
            "does not exist",
            f"run `wgen tune --out {path}` to the end first",
        )
    best = read_json(found)
    if not isinstance(best, dict) or not {"preset", "overrides", "params"} <= set(best):
        raise ConfigError(f"--from-tune: {found} is not a best.json written by `wgen tune`")
    params = [f"{key}={_setting(value)}" for key, value in best["params"].items()]
    return best["preset"], list(best["overrides"]) + params


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan
