"""`python -m training.protocols` in a checkout: the same code as `uniqa protocols`."""

import sys

from modeling_uniqa.tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["protocols", *sys.argv[1:]]))
