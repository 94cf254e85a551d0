"""Pieces shared by the command-line tools: an argparse that errors on one line, key=value parsing."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import fail


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (``prog: error: ...``) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        fail(self.prog, f"{message} (see --help)")


def parse_scalar(text: str):
    """'0.5' -> 0.5, '3' -> 3, 'true' -> True, anything else stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_key_values(items: list[str] | None, what: str = "--hparam") -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} expects key=value, got '{item}'")
        out[key.strip()] = parse_scalar(value.strip())
    return out


def check_outputs_writable(*paths: str | None) -> None:
    """Fail before any work if an output file's folder does not exist."""
    for p in paths:
        if p and not Path(p).resolve().parent.is_dir():
            raise ValueError(f"cannot write {p}: folder {Path(p).parent} does not exist")
