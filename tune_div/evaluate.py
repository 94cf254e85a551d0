"""``python -m tune_div.evaluate``: the ``evaluate`` command (``tune_div.cli.evaluate``), as ``tune-div evaluate``."""

import sys

from .cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m tune_div.evaluate"))
