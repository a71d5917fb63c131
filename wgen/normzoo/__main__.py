"""``python -m wgen.normzoo --out DIR [--<setting> VALUE ...]``: build a classifier-norm zoo.

Every field of `wgen.normzoo.zoo.NormZooConfig` is a flag (``--train-concepts 20``); the
run folder it writes is what `wgen train --out DIR` reads (docs/architecture.md, "A second
family: classifier norm layers").
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from wgen.core.errors import WgenError


def main(argv: list[str] | None = None) -> None:
    from wgen.normzoo.zoo import NormZooConfig, build_zoo

    parser = argparse.ArgumentParser(
        prog="python -m wgen.normzoo",
        description="Build a zoo of digit-classifier norm layers, one per class subset, as a "
        "run folder that `wgen train` reads.",
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder to write")
    defaults = NormZooConfig()
    for field in dataclasses.fields(NormZooConfig):
        value = getattr(defaults, field.name)
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", type=type(value), default=value,
            help=f"default {value}",
        )  # fmt: skip
    args = parser.parse_args(argv)
    config = NormZooConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(defaults)})
    try:
        summary = build_zoo(args.out, config)
    except WgenError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    print(
        f"normzoo: {summary['converged']}/{summary['selected']} concepts, {summary['rows']} "
        f"checkpoint rows → {args.out}; train on it with `wgen train --preset tiny --set "
        f"train.paraphrases=0 --set train.epochs=40 --set train.func_pairs=32 --out {args.out}`"
    )


if __name__ == "__main__":
    main()
