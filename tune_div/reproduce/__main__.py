"""``python -m tune_div.reproduce``: the ``reproduce`` command (kept next to ``tune-div reproduce``)."""

import sys

from ..cli.reproduce import main

sys.exit(main(prog="python -m tune_div.reproduce"))
