"""A `wgen` command on a run folder with a damaged file, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def refused_naming(args: list[str], path: Path, remake: str, ray_local) -> str:
    """Run ``python -m wgen *args``; assert it exits 2 before Ray starts with one error line
    that names ``path`` and the command ``remake``, and no traceback. Returns the line.
    On the shared Ray (``ray_local``), so a command that failed to refuse does not start
    a second Ray instance on the machine."""
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    done = subprocess.run(
        [sys.executable, "-m", "wgen", *args], env=env, capture_output=True, text=True, timeout=180
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    (line,) = [x for x in output.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {path}: "), line
    assert remake in line, line
    print(line)  # shown with -rA: the message a user sees
    return line
