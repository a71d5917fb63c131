"""The project's user-error types: mistakes in what a user asked for, not bugs in wgen.

The command line catches exactly these (``wgen.cli``) and prints their one-line message with
exit code 2 (`Interrupted`: 130); anything else is a bug and keeps its traceback (exit 1).
Raise them where the input is first seen, before Ray starts, naming the config key or the
file and what would be right (docs/architecture.md, rule 10).
"""

from __future__ import annotations

from pathlib import Path


class WgenError(Exception):
    """A user mistake or an unusable input; the message is the whole story, in one line."""

    exit_code = 2


class ConfigError(WgenError, ValueError):
    """A preset name, ``--set`` key or value, or a combination of values that cannot work.

    Also a `ValueError`, so code that validated with ``except ValueError`` keeps working.
    """


class InputFileError(WgenError):
    """A file or folder that is missing, unreadable, truncated or in the wrong format."""

    def __init__(self, path: str | Path, problem: str, remedy: str = ""):
        self.path = Path(path)
        message = f"{self.path}: {problem}"
        super().__init__(f"{message}; {remedy}" if remedy else message)


class OutputError(WgenError):
    """An output location that cannot be written, or that would overwrite something."""


class RunFolderError(WgenError):
    """A run folder made with other settings, missing a stage's inputs, or held by another
    writer."""


class RunFolderLocked(RunFolderError):
    """Another process holds the run folder's lock."""


class CollectIncomplete(WgenError):
    """Collection finished, but fewer concepts converged than ``collect.min_converged``."""

    exit_code = 3


class Interrupted(WgenError):
    """Ctrl-C: the work done so far is kept; the same command resumes."""

    exit_code = 130
