"""``python -m tune_div.export``: the ``export`` command (``tune_div.cli.export``), kept next to ``tune-div export``."""

import sys

from .cli.export import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m tune_div.export"))
