"""``python -m tune_div.ui``: the ``ui`` command (``tune_div.cli.ui``), kept next to ``tune-div ui``."""

import sys

from .cli.ui import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m tune_div.ui"))
