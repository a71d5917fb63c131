"""Process-level helpers leave the process as they found it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from ray.data import DataContext

from wgen.core.runtime import scoped_data_context, torch_threads


def test_scoped_data_context_restores_the_fields_it_changed():
    context = DataContext.get_current()
    bars, batch = context.enable_progress_bars, context.target_max_block_size
    with scoped_data_context(enable_progress_bars=not bars, target_max_block_size=1234) as inner:
        assert inner is DataContext.get_current()
        assert inner.enable_progress_bars is (not bars)
        assert inner.target_max_block_size == 1234
    assert context.enable_progress_bars is bars
    assert context.target_max_block_size == batch


def test_scoped_data_context_restores_after_an_error_and_refuses_unknown_fields():
    context = DataContext.get_current()
    bars = context.enable_progress_bars
    with pytest.raises(RuntimeError), scoped_data_context(enable_progress_bars=not bars):
        raise RuntimeError("stage failed")
    assert context.enable_progress_bars is bars
    with pytest.raises(AttributeError, match="no_such_field"):
        with scoped_data_context(no_such_field=1):
            pass
    assert not hasattr(context, "no_such_field")


def test_torch_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise RuntimeError("generation failed")
    assert torch.get_num_threads() == before


def test_quiet_logging_hides_warnings_about_what_wgen_chose(monkeypatch):
    import logging

    from wgen.core.runtime import VERBOSE_ENV, quiet_logging

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    quiet_logging()
    bars = logging.getLogger("ray.data._internal.progress")  # "Progress bars disabled ..."
    assert not bars.isEnabledFor(logging.WARNING) and bars.isEnabledFor(logging.ERROR)
    assert logging.getLogger("ray.data").isEnabledFor(logging.WARNING)  # other warnings stay


def test_ray_train_logs_warnings_only_unless_verbose(monkeypatch):
    from wgen.core.runtime import VERBOSE_ENV, train_logging_config

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    assert train_logging_config().log_level == "WARNING"  # no TrainingReport(...) per epoch
    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert train_logging_config().log_level == "INFO"


def test_ray_data_stays_quiet_after_it_reconfigures_its_logger(monkeypatch):
    import logging

    from ray.data._internal.logging import configure_logging

    from wgen.core.runtime import QUIET_ENV, VERBOSE_ENV, quiet_logging

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    for key in QUIET_ENV:
        monkeypatch.delenv(key, raising=False)
    quiet_logging()
    configure_logging()  # what Ray Data does again for every dataset, in every worker
    data = logging.getLogger("ray.data")
    assert not data.isEnabledFor(logging.INFO) and data.isEnabledFor(logging.WARNING)


def test_ray_trains_per_report_line_is_quiet(monkeypatch):
    """Ray Train's worker context logs "Reporting training result N: TrainingReport(...)" on
    a logger named by its file's path, outside the "ray" tree."""
    import logging

    from ray.train.v2._internal.execution import context

    from wgen.core.runtime import VERBOSE_ENV, quiet_logging

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    quiet_logging()
    assert not context.logger.isEnabledFor(logging.INFO)
    monkeypatch.setenv(VERBOSE_ENV, "1")
    quiet_logging()
    assert context.logger.isEnabledFor(logging.INFO)
    monkeypatch.delenv(VERBOSE_ENV)
    quiet_logging()


def test_rays_deprecation_warnings_about_its_own_calls_are_hidden(monkeypatch):
    import warnings

    from wgen.core.runtime import VERBOSE_ENV, quiet_logging

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_logging()
        for module in ("ray.data._internal.execution.interfaces.execution_options", "wgen.cli"):
            warnings.warn_explicit("old", DeprecationWarning, "x.py", 1, module=module)
    assert len(caught) == 1  # the one from wgen still shows


EXIT_AFTER_INTERRUPT = """
import atexit, sys
from wgen.core.runtime import exit_after_interrupt

atexit.register(lambda: print("finalised"))
if sys.argv[1] == "ray":
    import ray  # loaded, never started: its native side is what finalisation crashed into
print("said what is kept", flush=False)
exit_after_interrupt(130)
print("returned")
"""


@pytest.mark.parametrize("used", ["ray", "none"])
def test_exit_after_interrupt_skips_finalisation_once_ray_was_loaded(used):
    """A process that has used Ray must not meet interpreter finalisation after Ctrl-C (it
    segfaulted); without Ray, the caller carries on and the process ends normally."""
    done = subprocess.run(
        [sys.executable, "-c", EXIT_AFTER_INTERRUPT, used], capture_output=True, text=True
    )
    if used == "ray":
        assert (done.returncode, done.stdout) == (130, "said what is kept\n")  # flushed, then out
    else:
        assert (done.returncode, done.stdout) == (0, "said what is kept\nreturned\nfinalised\n")
