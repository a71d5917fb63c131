"""`python -m wgen ...` is the `wgen` command (useful where the console script is not on PATH)."""

from wgen.cli import main

if __name__ == "__main__":
    main()
