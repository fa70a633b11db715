"""`python -m training.purify` in a checkout: the same code as `uniqa purify`."""

import sys

from modeling_uniqa.tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["purify", *sys.argv[1:]]))
