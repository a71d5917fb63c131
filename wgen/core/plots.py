"""Figures a person would rather look at than read: pair grids and training curves.

Figures are drawn on matplotlib's Agg canvas directly (files only; these machines have no
screen), without pyplot: importing this module changes no backend, and no figure outlives
the call that drew it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas, outside pyplot's registry of open figures."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Lay out and write as PNG, creating the folder."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def image_grid(
    rows: list[tuple[str, list[np.ndarray]]],
    path: Path,
    column_titles: list[str] | None = None,
    scale: float = 1.3,
) -> Path:
    """One row per (label, images): the label on the left, the uint8 images beside it."""
    n_cols = max(len(images) for _, images in rows)
    fig = new_figure((scale * n_cols + 3.5, scale * len(rows)))
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                ax.imshow(images[c], interpolation="nearest")
            if r == 0 and column_titles and c < len(column_titles):
                ax.set_title(column_titles[c], fontsize=8)
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8, wrap=True)
    return save_figure(fig, path)


def convergence_plot(curves: list[dict[str, Any]], path: Path, metric: str = "l1") -> Path:
    """Validation metric over steps per concept, with the convergence point and the K
    checkpoints marked. ``curves``: {"label", "history", "converged_step", "checkpoint_steps"}."""
    fig = new_figure((8, 4.5))
    ax = fig.subplots()
    for curve in curves:
        steps = [h["step"] for h in curve["history"]]
        values = [h[metric] for h in curve["history"]]
        (line,) = ax.plot(steps, values, label=curve["label"], lw=1.5)
        by_step = dict(zip(steps, values, strict=True))
        if curve.get("converged_step") is not None:
            s = curve["converged_step"]
            ax.plot([s], [by_step[s]], "o", color=line.get_color(), ms=8, mfc="none", mew=2)
        ks = [s for s in curve.get("checkpoint_steps", []) if s in by_step]
        ax.plot(ks, [by_step[s] for s in ks], "*", color=line.get_color(), ms=9)
    ax.plot([], [], "ko", mfc="none", mew=2, label="converged")
    ax.plot([], [], "k*", label="K checkpoints")
    if metric in ("l1", "fd"):
        ax.set_yscale("log")  # concepts differ in difficulty by orders of magnitude
    ax.set_xlabel("LoRA training step")
    ax.set_ylabel(f"validation {metric} (held-back pairs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    return save_figure(fig, path)
