"""benchmarks/generator_quality.py refuses a --ceilings folder it cannot use, in one line."""

import importlib.util
from pathlib import Path

import pytest

from wgen.data.pairs import CONCEPTS_FILE

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "generator_quality.py"


def _script():
    spec = importlib.util.spec_from_file_location("generator_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ceilings_must_be_a_run_folder_over_the_same_concepts(tmp_path):
    check = _script().check_ceilings
    out, ceilings = tmp_path / "run", tmp_path / "ceil"
    out.mkdir()
    ceilings.mkdir()
    (out / CONCEPTS_FILE).write_text('{"id": "c0000"}\n')
    with pytest.raises(SystemExit, match="not a run folder"):
        check(ceilings, out)
    (ceilings / CONCEPTS_FILE).write_text('{"id": "c0001"}\n')
    with pytest.raises(SystemExit, match="its concepts differ"):
        check(ceilings, out)
    (ceilings / CONCEPTS_FILE).write_text('{"id": "c0000"}\n')
    check(ceilings, out)  # the same concepts: accepted
