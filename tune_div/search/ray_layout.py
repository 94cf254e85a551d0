"""Ray Tune's on-disk names, read in one place (Ray 2.60.0, ``Trial._generate_dirname``): a trial's folder
is ``<trainable>_<trial id>_<index>_<params>_<date>``, ``<index>`` counting trials in creation order. A
search algorithm's trial ids (``Trial.generate_id``) hold no underscore."""

from __future__ import annotations

from pathlib import Path


def _parts(trial_dir: str | Path) -> list[str]:
    return Path(str(trial_dir)).name.split("_")


def trial_id(trial_dir: str | Path) -> str:
    """The Ray trial id from a trial's folder."""
    return _parts(trial_dir)[1]


def creation_index(trial_dir: str | Path) -> int | None:
    """The trial's index in the search (creation order), None when the folder is not a trial's."""
    try:
        return int(_parts(trial_dir)[2])
    except (IndexError, ValueError):
        return None
