"""Entry modules for `ray job submit -- python -m rayjobs.<stage> ...`.

Each module runs the `wgen <stage>` command with its own arguments, so the flags of a
cluster job and of the local command line can never drift apart. Nothing runs at import.

Submit from the project folder with the runtime environment beside this file (the code as
the working directory, the project's pinned dependencies)::

    ray job submit --address http://127.0.0.1:8265 --runtime-env rayjobs/runtime_env.json \\
        -- python -m rayjobs.pairs --preset cluster --out /shared/runs/paper
"""

from __future__ import annotations

import os
import sys

# Ray sets this in the environment of a submitted job's driver (and only there).
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def out_argument(argv: list[str]) -> str | None:
    """The value of ``--out`` in ``argv`` (``--out X`` or ``--out=X``), None if absent."""
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    return None


def check_job_out(argv: list[str], in_job: bool) -> str | None:
    """A one-line problem with ``--out`` for a submitted job, or None.

    A job's working directory is a temporary copy of the uploaded folder on the head node: a
    relative (or default) ``--out`` would be written there, reach no worker node and vanish
    with the job. Inside a job the run folder must be absolute (shared storage) or a URI.
    """
    if not in_job:
        return None
    out = out_argument(argv)
    if out is None:
        return (
            "--out is required in a Ray job: pass an absolute run folder on storage every node "
            "shares, e.g. --out /shared/runs/paper"
        )
    if "://" in out or os.path.isabs(os.path.expanduser(out)):
        return None
    return (
        f"--out {out} is relative: in a Ray job it would land in the job's temporary working "
        "directory on the head node; pass an absolute path on shared storage, e.g. "
        "--out /shared/runs/paper"
    )


def run_stage(stage: str) -> None:
    """Run the `wgen <stage>` command of a stage in `wgen.core.stages.STAGES`."""
    from wgen.cli import app
    from wgen.core.stages import STAGES

    if stage not in STAGES:
        raise ValueError(f"{stage!r} is no stage of wgen.core.stages.STAGES: {', '.join(STAGES)}")
    argv = sys.argv[1:]
    problem = check_job_out(argv, in_job=JOB_ENV in os.environ)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    app([stage, *argv], prog_name=f"python -m rayjobs.{stage}")
