"""Stage records list their files; readers check them: size, format, sha256 (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from wgen.core.errors import InputFileError
from wgen.core.integrity import stage_files, verify_inputs, verify_stage
from wgen.core.runtime import SUCCESS_FILE, write_json

ARGS = "--preset tiny --out RUN"


def finished_run(out: Path, with_files: bool = True) -> Path:
    """A run folder with finished pairs and collection, as their stages leave them."""
    (out / "pairs").mkdir(parents=True)
    (out / "concepts.jsonl").write_text('{"id": "c0000"}\n{"id": "c0001"}\n')
    pq.write_table(pa.table({"x": list(range(100))}), out / "pairs" / "part-0.parquet")
    (out / "base").mkdir()
    save_file({"w": torch.zeros(64)}, str(out / "base" / "generator.safetensors"))
    write_json(out / "base" / "base.json", {"size": "tiny"})
    (out / "weights" / "_status").mkdir(parents=True)
    write_json(out / "weights" / "_manifest.json", {"groups": []})
    write_json(out / "weights" / "_status" / "c0000.json", {"status": "converged"})
    pq.write_table(pa.table({"g000": [[1.0, 2.0]]}), out / "weights" / "c0000.parquet")
    for stage, folder in (("pairs", "pairs"), ("collect", "weights")):
        files = {"files": stage_files(out, stage)} if with_files else {}
        write_json(out / folder / SUCCESS_FILE, {"record": {}, **files})
    return out


def test_a_record_lists_each_file_the_stage_wrote_with_size_and_sha256(tmp_path):
    out = finished_run(tmp_path)
    files = stage_files(out, "collect")
    assert sorted(files) == [
        "base/base.json",
        "base/generator.safetensors",
        "weights/_manifest.json",
        "weights/c0000.parquet",
    ]  # not its _SUCCESS.json, nor collection's own bookkeeping (_status/)
    entry = files["weights/c0000.parquet"]
    assert entry["bytes"] == (out / "weights" / "c0000.parquet").stat().st_size
    assert len(entry["sha256"]) == 64
    assert sorted(stage_files(out, "pairs")) == ["concepts.jsonl", "pairs/part-0.parquet"]
    verify_inputs(out, "train", ARGS)  # intact: nothing to say


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


@pytest.mark.parametrize("with_files", [True, False], ids=["listed", "old record"])
@pytest.mark.parametrize(
    ("rel", "damage", "problem", "remake"),
    [
        ("weights/c0000.parquet", truncate, "damaged: ", "wgen collect --preset tiny --out RUN --retry"),
        ("weights/_manifest.json", lambda p: p.write_text('{"gro'), "damaged: ", "wgen collect"),
        ("base/generator.safetensors", truncate, "damaged: ", "wgen collect --preset tiny --out RUN --force"),
        ("concepts.jsonl", lambda p: p.write_text('{"id": "c0000"}\n{"id'), "damaged: ", "wgen pairs"),
        ("pairs/part-0.parquet", truncate, "damaged: ", "wgen pairs --preset tiny --out RUN --force"),
    ],
)  # fmt: skip
def test_a_damaged_input_is_one_line_naming_it_and_its_remedy(
    tmp_path, with_files, rel, damage, problem, remake
):
    out = finished_run(tmp_path, with_files)
    damage(out / rel)
    with pytest.raises(InputFileError) as caught:
        verify_inputs(out, "train", ARGS)
    message = str(caught.value)
    assert message.startswith(f"{out / rel}: {problem}") and "\n" not in message
    assert f"remake it with `{remake}" in message


def test_a_listed_file_changed_in_place_or_missing_is_named(tmp_path):
    out = finished_run(tmp_path)
    concepts = out / "concepts.jsonl"  # the same size and still JSON: only the digest can tell
    concepts.write_text(concepts.read_text().replace("c0001", "c0009"))
    with pytest.raises(InputFileError, match="its sha256 differs from the one .* lists"):
        verify_stage(out, "pairs", ARGS)
    (out / "concepts.jsonl").unlink()
    with pytest.raises(InputFileError, match=r"concepts.jsonl: missing \(listed in .*pairs/_SUCC"):
        verify_stage(out, "pairs", ARGS)


def test_an_unfinished_stage_is_not_checked(tmp_path):
    out = finished_run(tmp_path)
    (out / "weights" / SUCCESS_FILE).unlink()
    truncate(out / "weights" / "c0000.parquet")
    verify_inputs(out, "train", ARGS)  # `check_input` says it is unfinished, not this
