"""`ray job submit --working-dir . -- python -m rayjobs.train --preset cluster --out /shared/runs/x`

Takes exactly the flags of `wgen train` (see `wgen train --help`). Submitting it again on
the same --out resumes the Ray Train run from its latest checkpoint.
"""

from rayjobs import run_stage

if __name__ == "__main__":
    run_stage("train")
