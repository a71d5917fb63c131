"""`ray job submit --working-dir . -- python -m rayjobs.tune --preset cluster --out /shared/runs/x`

Takes exactly the flags of `wgen tune` (see `wgen tune --help`). Submitting it again on the
same --out resumes an interrupted search without re-running its finished trials.
"""

from rayjobs import run_stage

if __name__ == "__main__":
    run_stage("tune")
