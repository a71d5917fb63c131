"""`ray job submit --working-dir . -- python -m rayjobs.pairs --preset cluster --out /shared/runs/x`

Takes exactly the flags of `wgen pairs` (see `wgen pairs --help`).
"""

from rayjobs import run_stage

if __name__ == "__main__":
    run_stage("pairs")
