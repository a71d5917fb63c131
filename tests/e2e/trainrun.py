"""What a Ray Train run has on disk, for the tests that kill its workers mid-training."""

from __future__ import annotations

import json
from pathlib import Path


def registered_epoch(run_dir: Path) -> int:
    """The epoch of the latest checkpoint Ray Train's controller has registered (its run
    snapshot): a worker killed before the controller polled its last report would, rightly,
    resume from the one before."""
    path = Path(run_dir) / "checkpoint_manager_snapshot.json"
    if not path.exists():
        return 0
    latest = json.loads(path.read_text()).get("latest_checkpoint_result") or {}
    return int(latest.get("metrics", {}).get("epoch", 0))
