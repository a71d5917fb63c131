"""Two bench folders that differ only in the rule's window (`bench.window_steps`), run by
run: where each rule stopped, the step of the restored best, its converged test L1 and the
step at which the run converged (read after the run, as the report reads it).

For t >= 2 × the larger window both rules' windows are 0.5 t, so a run the shorter window
let run past that point is the same run under both rules (the same seed trains the same
steps); `wgen bench` keeps such runs when they are copied into the longer window's folder,
and this script marks them "shared". The rest were stopped earlier by the shorter window:
they show what the window costs in quality and in steps.

    .venv/bin/python benchmarks/bench_rule_window.py runs/bench/bench runs/benchw300/bench \
        --methods scratch lora-zero
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def runs_of(folder: Path, methods: list[str]) -> dict[tuple[str, str, int], dict]:
    """(concept, method, seed) → the run's record, for every finished run in ``folder``."""
    found = {}
    for path in sorted((folder / "runs").glob("*/*__s*.json")):
        method, seed = path.stem.rsplit("__s", 1)
        if method in methods:
            found[(path.parent.name, method, int(seed))] = json.loads(path.read_text())
    return found


def row(run: dict) -> tuple[int, int, float, int | None]:
    return run["steps"], run["best_step"], run["final"]["l1"], run["steps_to_converge"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("short", type=Path, help="bench folder of the shorter window")
    parser.add_argument("long", type=Path, help="bench folder of the longer window")
    parser.add_argument("--methods", nargs="+", default=["scratch"])
    args = parser.parse_args()
    short, long = runs_of(args.short, args.methods), runs_of(args.long, args.methods)
    print(
        "| concept | method | seed | stop step (short → long) | best step | converged test L1 "
        "| steps to converge | |\n|---|---|---|---|---|---|---|---|"
    )
    changed = []
    for key in sorted(set(short) & set(long)):
        (s_stop, s_best, s_l1, s_conv), (l_stop, l_best, l_l1, l_conv) = (
            row(short[key]),
            row(long[key]),
        )
        same = (s_stop, s_best, s_l1) == (l_stop, l_best, l_l1)
        if not same:
            changed.append((key[1], l_l1 / s_l1, l_stop / max(s_stop, 1)))
        print(
            f"| {key[0]} | {key[1]} | {key[2]} | {s_stop} → {l_stop} | {s_best} → {l_best} "
            f"| {s_l1:.4f} → {l_l1:.4f} | {s_conv} → {l_conv} | {'shared' if same else ''} |"
        )
    for method in args.methods:
        mine = [(q, s) for m, q, s in changed if m == method]
        if mine:
            print(
                f"{method}: {len(mine)} run(s) stopped earlier by the short window; the long "
                f"window's converged test L1 / the short's: median "
                f"{statistics.median(q for q, _ in mine):.2f}; its steps run / the short's: "
                f"median {statistics.median(s for _, s in mine):.1f}"
            )


if __name__ == "__main__":
    main()
