"""Ctrl-C as a terminal sends it: SIGINT to the whole process group of a `wgen` command.

The command must react to SIGINT whatever the test process inherited: started from a
background shell (``cmd &`` without job control, ``nohup``, some CI runners) the test process
has SIGINT ignored, and an ignored signal stays ignored across ``exec``, so the command would
ignore the Ctrl-C and run to its end. `popen_interruptible` starts it with SIGINT at its
default disposition instead, as a terminal's foreground command has it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any


def popen_interruptible(command: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(command, **kwargs)`` with SIGINT at its default disposition in the
    child. While it starts, this process *handles* SIGINT (a no-op): ``exec`` resets a handled
    signal to the default, where an ignored one would stay ignored. (Not ``preexec_fn``: it
    is unsafe in a process with threads, which Ray's driver has.)"""
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        return subprocess.Popen(command, **kwargs)
    finally:
        signal.signal(signal.SIGINT, previous)


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
    job = popen_interruptible(
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
    try:
        rest, _ = job.communicate(timeout=timeout)
    finally:
        if job.poll() is None:  # a command that ignored the Ctrl-C must not outlive the test
            os.killpg(job.pid, signal.SIGKILL)
    return job.returncode, "".join(lines) + rest
