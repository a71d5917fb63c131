"""Run-folder records, the lock, and the collect stage's resume checks (no Ray)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from wgen.collect.stage import check_min_converged, check_weight_files, rewind_attempts
from wgen.config import load_config
from wgen.core.errors import CollectIncomplete, RunFolderError, RunFolderLocked, WgenError
from wgen.core.runfolder import (
    LOCK_FILE,
    check_input,
    check_own,
    fingerprint,
    run_lock,
    stage_fields,
    stage_record,
)
from wgen.core.runtime import SUCCESS_FILE, write_json
from wgen.weights.format import Selection, build_manifest
from wgen.weights.store import WeightStore


def test_fingerprint_ignores_how_work_is_spread_but_not_what_is_made():
    tiny = load_config("tiny")
    spread = load_config("tiny", ["collect.actors=7", "collect.max_steps=999", "train.epochs=9"])
    assert fingerprint(stage_fields(tiny, "train")) == fingerprint(stage_fields(spread, "train"))
    changed = load_config("tiny", ["lora.rank=2"])
    assert stage_fields(tiny, "pairs") == stage_fields(changed, "pairs")
    assert fingerprint(stage_fields(tiny, "collect")) != fingerprint(
        stage_fields(changed, "collect")
    )


def test_a_record_of_other_settings_is_refused_naming_fields_unless_forced(tmp_path):
    write_json(
        tmp_path / "pairs" / SUCCESS_FILE, {"record": stage_record(load_config("tiny"), "pairs")}
    )
    demo = load_config("demo")
    with pytest.raises(
        RunFolderError, match=r"--preset tiny, this command uses --preset demo .*data\."
    ):
        check_own(tmp_path, "pairs", demo, force=False)
    assert check_own(tmp_path, "pairs", demo, force=True) is None
    with pytest.raises(RunFolderError, match="use --preset tiny"):
        check_input(tmp_path, "collect", demo)
    assert check_own(tmp_path, "pairs", load_config("tiny"), force=False)["record"]


def test_a_record_older_than_a_later_field_continues_with_that_field_off(tmp_path):
    # weights/ collected before `collect.restore_best` existed: its record lacks the field.
    old = stage_record(load_config("tiny", ["collect.restore_best=false"]), "collect")
    old["fields"].pop("collect.restore_best")
    old["fingerprint"] = fingerprint(old["fields"])
    write_json(tmp_path / "weights" / SUCCESS_FILE, {"record": old})
    check_input(tmp_path, "train", load_config("tiny", ["collect.restore_best=false"]))
    with pytest.raises(RunFolderError, match=r"collect\.restore_best: False → True"):
        check_input(tmp_path, "train", load_config("tiny"))


def test_an_unreadable_success_file_is_named(tmp_path):
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / SUCCESS_FILE).write_text("{broken")
    with pytest.raises(WgenError, match=f"{tmp_path / 'pairs' / SUCCESS_FILE}: unreadable"):
        check_input(tmp_path, "collect", load_config("tiny"))


def test_the_lock_refuses_a_live_holder_and_is_released(tmp_path):
    with run_lock(tmp_path, "first"):
        assert (tmp_path / LOCK_FILE).exists()
        with (
            pytest.raises(RunFolderLocked, match=f"pid {os.getpid()}"),
            run_lock(tmp_path, "second"),
        ):
            pass
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_whose_process_is_gone_is_taken_over(tmp_path, capsys):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    write_json(tmp_path / LOCK_FILE, {"pid": int(gone.stdout), "host": os.uname().nodename})
    with run_lock(tmp_path):
        pass
    assert "stale lock" in capsys.readouterr().err


def test_a_lock_of_another_host_is_respected(tmp_path):
    write_json(tmp_path / LOCK_FILE, {"pid": 1, "host": "elsewhere"})
    with pytest.raises(RunFolderLocked, match="on elsewhere"), run_lock(tmp_path):
        pass
    assert (tmp_path / LOCK_FILE).exists()


# -- collect: resume checks -----------------------------------------------------------------


def manifest():
    return build_manifest(
        {"a.lora_A.weight": torch.zeros(2, 3), "n.weight": torch.zeros(4)}, Selection(), "b"
    )


def converged_concept(store: WeightStore, concept_id: str, k: int = 2) -> None:
    lengths = manifest().group_lengths
    vectors = [[np.ones(n, np.float32) for n in lengths] for _ in range(k)]
    meta = {
        "concept_id": concept_id,
        "concept_text": "sepia",
        "split": "train",
        "converged_step": 5,
    }
    checkpoints = [
        {"step": 5 + i, "metrics": {"l1": 0.1, "psnr": 20.0, "fd": 1.0}} for i in range(k)
    ]
    store.write_concept(meta, checkpoints, vectors)
    store.record_status(
        concept_id, {"status": "converged", "checkpoint_steps": [5 + i for i in range(k)]}
    )


def test_damaged_weight_files_are_found(tmp_path):
    store = WeightStore(tmp_path)
    store.save_manifest(manifest())
    for concept_id in ("c0001", "c0002", "c0003", "c0004"):
        converged_concept(store, concept_id)
    path = store.folder / "c0002.parquet"
    path.write_bytes(path.read_bytes()[:-30])  # truncated on disk
    (store.folder / "c0003.parquet").unlink()  # lost
    store.record_status(
        "c0004", {"status": "converged", "checkpoint_steps": [5, 6, 7]}
    )  # K differs
    problems = dict(check_weight_files(store))
    assert sorted(problems) == ["c0002", "c0003", "c0004"]
    assert "c0002.parquet is damaged" in problems["c0002"]
    assert "2 rows, expected 3" in problems["c0004"]


def test_interrupted_attempts_are_rewound_finished_ones_kept(tmp_path):
    store = WeightStore(tmp_path)
    store.begin_attempt("c0001")  # one real earlier attempt
    before = {"c0001": 1, "c0002": 0, "c0003": 0}
    for concept_id in before:
        store.begin_attempt(concept_id)  # this run's attempts, cut short by Ctrl-C
    store.record_status("c0003", {"status": "converged"})  # finished before the Ctrl-C
    rewind_attempts(store, before)
    assert len(store.attempts("c0001")) == 1
    assert store.attempts("c0002") == []
    assert len(store.attempts("c0003")) == 1


def test_too_few_converged_concepts_fail_with_the_reasons():
    config = load_config("tiny")
    summary = {
        "selected": 4,
        "converged": 2,
        "converged_share": 0.5,
        "by_status": {"converged": 2, "not_converged": 1, "failed": 1},
        "not_converged_or_failed": {"c0001": "l1 still improving", "c0002": "actor died"},
    }
    with pytest.raises(
        CollectIncomplete, match=r"only 2/4 .*c0001: l1 still improving; c0002: actor died"
    ) as err:
        check_min_converged(summary, config)
    assert err.value.exit_code == 3
    check_min_converged({**summary, "converged": 4, "converged_share": 1.0}, config)
    check_min_converged(summary, load_config("tiny", ["collect.min_converged=0.5"]))
