"""``python -m experiments.reproduce RUN_DIR``: rerun a saved run from its config and compare every
number (``lab.reproduce``)."""

import sys

from lab.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
