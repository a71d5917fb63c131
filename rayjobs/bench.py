"""`ray job submit --working-dir . -- python -m rayjobs.bench --preset bench --out /shared/runs/x`

Takes exactly the flags of `wgen bench` (see `wgen bench --help`). Submitting it again on
the same --out resumes: finished (concept, method, seed) runs are kept.
"""

from rayjobs import run_stage

if __name__ == "__main__":
    run_stage("bench")
