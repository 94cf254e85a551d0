"""``python -m tune_div.train``: the ``train`` command (kept next to ``tune-div train``)."""

import sys

from ..cli.train import main

sys.exit(main(prog="python -m tune_div.train"))
