"""The bad-input table: each mistake a user makes, run through the real `wgen` command line.

For every case of `tests/unit/test_cli_bad_inputs.py` (the same list the tests check) and a
few damaged files from it, this runs `wgen ...` in a fresh process against a run folder that
already holds something, and prints a Markdown row: the command, its exit code, the first
line of its message, and whether every file that was there before is byte-for-byte the same.

    .venv/bin/python benchmarks/bad_inputs_table.py > /tmp/bad_inputs.md
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests package
from tests.unit.test_cli_bad_inputs import CONFIG_CASES, fake_generator, snapshot  # noqa: E402

WGEN = str(Path(sys.executable).with_name("wgen"))


def first_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    found = next((line for line in lines if line.startswith(("error:", "interrupted"))), None)
    return found or (lines[-1] if lines else "")


def damage(name: str, how: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """A case that writes a generator folder, damages one file and asks it for an adapter."""

    def prepare(run: Path) -> list[str]:
        folder = fake_generator(run / "generator")
        how(folder / name)
        return [
            "generate",
            "--generator",
            str(folder),
            "--concept",
            "sepia",
            "--out",
            str(run / "a"),
        ]

    return prepare


def file_cases() -> list[tuple[str, Callable[[Path], list[str]]]]:
    def out_is_file(run: Path) -> list[str]:
        return ["pairs", "--preset", "tiny", "--out", str(run / "notes.txt")]

    def missing_input(run: Path) -> list[str]:
        return ["collect", "--preset", "tiny", "--out", str(run)]

    def adapter_exists(run: Path) -> list[str]:
        fake_generator(run / "generator")
        (run / "adapter").mkdir()
        (run / "adapter" / "adapter_config.json").write_text("{}")
        return ["generate", "--generator", str(run / "generator"), "--concept", "sepia",
                "--out", str(run / "adapter")]  # fmt: skip

    return [
        ("--out is a file", out_is_file),
        ("--out cannot be written", lambda run: ["pairs", "--preset", "tiny", "--out", "/proc/x"]),
        ("stage without its input", missing_input),
        (
            "no generator folder",
            lambda run: [
                "generate",
                "--generator",
                str(run / "nope"),
                "--concept",
                "sepia",
                "--out",
                str(run / "a"),
            ],
        ),  # fmt: skip
        (
            "truncated denoiser.safetensors",
            damage("denoiser.safetensors", lambda p: p.write_bytes(p.read_bytes()[:-40])),
        ),  # fmt: skip
        (
            "broken generator.json",
            damage("generator.json", lambda p: p.write_text('{"format_version": ')),
        ),  # fmt: skip
        ("broken config.yaml", damage("config.yaml", lambda p: p.write_text("data: [unclosed\n"))),
        ("adapter exists, no --force", adapter_exists),
    ]


def main() -> None:
    cases: list[tuple[str, Callable[[Path], list[str]]]] = []
    for name, command, _code, _text in CONFIG_CASES:
        extra = [] if "--preset" in command else ["--preset", "tiny"]
        cases.append((name, lambda run, c=command, e=extra: [*c, *e, "--out", str(run)]))
    cases += file_cases()
    print("| # | mistake | command | exit | first line of the message | run folder unchanged |")
    print("|---|---|---|---|---|---|")
    for index, (name, prepare) in enumerate(cases, 1):
        run = Path(tempfile.mkdtemp(prefix="wgen-bad-")) / "run"
        run.mkdir()
        (run / "notes.txt").write_text("keep me\n")
        args = prepare(run)
        before = snapshot(run)
        done = subprocess.run([WGEN, *args], capture_output=True, text=True, timeout=300)
        unchanged = "yes" if snapshot(run) == before else "**no**"
        shown = " ".join(args).replace(str(run), "RUN")
        line = first_line(done.stdout + done.stderr).replace(str(run), "RUN").replace("|", "\\|")
        print(f"| {index} | {name} | `wgen {shown}` | {done.returncode} | {line} | {unchanged} |")
        shutil.rmtree(run.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
