"""`ray job submit --working-dir . -- python -m rayjobs.collect --preset cluster --out /shared/runs/x`

Takes exactly the flags of `wgen collect` (see `wgen collect --help`).
"""

from rayjobs import run_stage

if __name__ == "__main__":
    run_stage("collect")
