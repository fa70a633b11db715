"""`python -m training.caption` in a checkout: the same code as `uniqa caption`."""

import sys

from modeling_uniqa.tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["caption", *sys.argv[1:]]))
