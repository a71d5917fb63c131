"""Entry modules for `ray job submit -- python -m rayjobs.<stage> ...`.

Each module runs the `wgen <stage>` command with its own arguments, so the flags of a
cluster job and of the local command line can never drift apart. Nothing runs at import.
"""

import sys


def run_stage(stage: str) -> None:
    from wgen.cli import app

    app([stage, *sys.argv[1:]], prog_name=f"python -m rayjobs.{stage}")
