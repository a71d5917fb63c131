"""The stage table (`wgen.core.stages`): every name in it resolves, and its callers agree."""

import inspect
from pathlib import Path

import pytest

from wgen.config import ConfigError, load_config
from wgen.core.stages import OPTIONS, STAGES, load, validate_stage

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(STAGES))
def test_each_stage_names_functions_that_exist_and_options_its_entry_takes(name):
    stage = STAGES[name]
    entry = inspect.signature(load(stage.entry))
    assert set(stage.options) <= set(OPTIONS)
    assert set(stage.options) <= set(entry.parameters), f"{stage.entry} lacks {stage.options}"
    for hook in (*stage.checks, stage.can_skip, stage.check_done):
        assert hook is None or callable(load(hook))
    for other in (*stage.reads, *stage.runs):
        assert other in STAGES
    assert not stage.recorded or stage.pulls is not None  # pairs, collect, train work at URIs


def test_the_table_imports_no_stage_package():
    source = (ROOT / "wgen" / "core" / "stages.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert all("wgen" not in line for line in imports), imports


def test_every_stage_command_and_rayjob_is_a_row_of_the_table():
    from wgen.cli import app

    commands = {command.name or command.callback.__name__ for command in app.registered_commands}
    jobs = {path.stem for path in (ROOT / "rayjobs").glob("*.py") if path.stem != "__init__"}
    assert jobs <= set(STAGES) <= commands


def test_demo_checks_every_stage_it_runs_once_in_order():
    config = load_config("tiny", ["bench.selection_pairs=20"])
    validate_stage(config, "collect")  # the bench's own value is not collect's
    with pytest.raises(ConfigError, match=r"^bench\.selection_pairs=20: leaves"):
        validate_stage(config, "demo")
