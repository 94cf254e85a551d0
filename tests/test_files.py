"""Writes that can be interrupted are atomic: an interrupted write leaves the old complete file."""

from __future__ import annotations

import pytest

from tune_div.errors import MissingFileError, UserError
from tune_div.files import atomic_write, atomic_write_text, read_yaml


def test_an_interrupted_write_leaves_the_old_file_and_no_debris(tmp_path):
    target = atomic_write_text(tmp_path / "results.csv", "old, complete\n")

    def half_then_crash(tmp):
        tmp.write_text("new, but only ha")
        raise KeyboardInterrupt  # the user pressed Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old, complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    atomic_write_text(target, "new, complete\n")
    assert target.read_text() == "new, complete\n"


def test_yaml_reader_says_what_is_wrong_in_one_line(tmp_path):
    with pytest.raises(MissingFileError, match="config file .* does not exist; pass one"):
        read_yaml(tmp_path / "none.yaml", "config file", "pass one")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(UserError, match="not valid YAML") as exc:
        read_yaml(tmp_path / "bad.yaml", "config file")
    assert "\n" not in str(exc.value)
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="not valid YAML"):
        read_yaml(tmp_path / "binary.yaml", "config file")
