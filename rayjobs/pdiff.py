"""`ray job submit --working-dir . -- python -m rayjobs.pdiff --preset demo --out /shared/runs/x`

Takes exactly the flags of `wgen pdiff` (see `wgen pdiff --help`).
"""

from rayjobs import run_stage

if __name__ == "__main__":
    run_stage("pdiff")
