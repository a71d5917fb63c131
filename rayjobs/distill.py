"""`ray job submit --working-dir . -- python -m rayjobs.distill --preset cluster --out /shared/runs/x`

Takes exactly the flags of `wgen distill` (see `wgen distill --help`). Submitting it again on
the same --out skips finished rounds and resumes the unfinished one from its checkpoint.
"""

from rayjobs import run_stage

if __name__ == "__main__":
    run_stage("distill")
