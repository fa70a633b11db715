"""`python -m training.finetune` in a checkout: the same code as `uniqa finetune`."""

import sys

from modeling_uniqa.tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
