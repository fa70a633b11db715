"""`python -m training.pretrain` in a checkout: the same code as `uniqa pretrain`."""

import sys

from modeling_uniqa.tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
