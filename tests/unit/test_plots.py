"""Figures are written as PNG files without touching matplotlib's global state."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from wgen.core.plots import convergence_plot, image_grid


def test_importing_plots_picks_no_backend_and_no_pyplot():
    code = (
        "import sys, matplotlib; before = matplotlib.rcParams._get_backend_or_none(); "
        "import wgen.core.plots; "
        "print('matplotlib.pyplot' in sys.modules, "
        "matplotlib.rcParams._get_backend_or_none() == before)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split() == ["False", "True"]


def test_image_grid_and_convergence_plot_write_pngs(tmp_path):
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    grid = image_grid([("source", [image, image]), ("target", [image])], tmp_path / "g.png")
    history = [{"step": s, "l1": 1.0 / (s + 1)} for s in (0, 10, 20, 30)]
    curve = {"label": "c1", "history": history, "converged_step": 20, "checkpoint_steps": [30]}
    plot = convergence_plot([curve], tmp_path / "sub" / "c.png")
    for path in (grid, plot):
        assert Image.open(path).format == "PNG"
