"""``python -m tune_div.search``: the ``search`` command (kept next to ``tune-div search``)."""

import sys

from ..cli.search import main

sys.exit(main(prog="python -m tune_div.search"))
