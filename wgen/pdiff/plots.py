"""The p-diff / Zeng et al. figure: held-out accuracy versus maximum similarity to the
original checkpoints, one colour per method, one panel per setting."""

from __future__ import annotations

from pathlib import Path

from wgen.core.plots import new_figure, save_figure


def scatter_methods(settings: dict[str, dict[str, dict[str, list[float]]]], path: Path) -> Path:
    """``settings[setting][method]`` = {"heldout_acc": [...], "max_similarity": [...]}."""
    fig = new_figure((6.5 * len(settings), 5))
    axes = fig.subplots(1, len(settings), squeeze=False)
    for ax, (setting, methods) in zip(axes[0], settings.items(), strict=True):
        for method, points in methods.items():
            marker = "*" if method == "p-diff" else "o"
            ax.scatter(
                points["max_similarity"], points["heldout_acc"], s=28 if marker == "*" else 14,
                marker=marker, alpha=0.6, label=method,
            )  # fmt: skip
        ax.set_xlabel("max similarity to any original (IoU of wrong predictions)")
        ax.set_ylabel("held-out accuracy")
        ax.set_title(setting)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)
