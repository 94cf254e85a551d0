"""``python -m tune_div <command>``: the same as ``tune-div <command>``."""

import sys

from .cli import main

sys.exit(main())
