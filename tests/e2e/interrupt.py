"""Ctrl-C as a terminal sends it: SIGINT to the whole process group of a `wgen` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable


def interrupt_wgen(
    args: list[str], ray_local, when: Callable[[str], bool], timeout: float = 240
) -> tuple[int, str]:
    """Run ``python -m wgen *args`` on the shared Ray and Ctrl-C it at the first output line
    for which ``when`` is true; returns its exit code and everything it printed."""
    # A crash after the interrupt (it was a SIGSEGV once) dumps every thread's stack into the
    # output that the failing assertion shows.
    env = {
        **os.environ,
        "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
        "PYTHONFAULTHANDLER": "1",
    }
    job = subprocess.Popen(
        [sys.executable, "-m", "wgen", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = []
    for line in job.stdout:  # blocks until the moment to interrupt
        lines.append(line)
        if when(line):
            os.killpg(job.pid, signal.SIGINT)
            break
    rest, _ = job.communicate(timeout=timeout)
    return job.returncode, "".join(lines) + rest
