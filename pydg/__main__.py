"""`python -m pydg`: the command line of pydg/cli.py (`python -m pydg --help`)."""
import sys

from pydg.cli import NO_HOPPER, main

__all__ = ["NO_HOPPER", "main"]

if __name__ == "__main__":
    sys.exit(main())
