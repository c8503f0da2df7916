"""``python -m experiments.report RUN_OR_SWEEP_DIR``: an offline report.html of a run or a sweep
(the page is built by ``lab.report``)."""

import sys

from lab.report import main

if __name__ == "__main__":
    sys.exit(main())
