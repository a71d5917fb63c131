"""`ray job submit -- python -m rayjobs.pairs --preset cluster --out /shared/runs/x`.

Same flags as `wgen pairs`: this module hands its arguments to that very command.
"""

import sys

from wgen.cli import app


def main() -> None:
    app(["pairs", *sys.argv[1:]], prog_name="python -m rayjobs.pairs")


if __name__ == "__main__":
    main()
