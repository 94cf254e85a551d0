"""Where the papers' text copies are: ``../shared/papers`` next to the checkout, else beside the real
data folder (``$TUNE_DIV_DATA/../papers``), so a clone elsewhere (CI) still checks the typed tables."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def papers_dir() -> Path:
    data = os.environ.get("TUNE_DIV_DATA")
    candidates = [REPO.parent / "shared" / "papers", *([Path(data).parent / "papers"] if data else [])]
    return next((c for c in candidates if c.is_dir()), candidates[0])


PAPERS = papers_dir()
