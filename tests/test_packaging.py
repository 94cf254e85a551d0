"""The package as a user installs it: ``pip install .`` (not editable) into a fresh venv, used from a
folder outside the checkout, and the command line's shape."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tune_div import attacks, data, defenses, models

REPO = Path(__file__).resolve().parents[1]


def run(cmd, cwd, timeout=600, **kw):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)
    assert p.returncode == 0, f"{cmd}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with tune_div installed from a wheel. Its pinned dependencies are taken from the test
    environment (a .pth line), so only tune_div itself is installed anew: that is what is under test."""
    root = tmp_path_factory.mktemp("install")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], root)
    py = venv / "bin" / "python"
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root).strip())
    (site / "tune_div_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Build from a copy: an in-tree build reuses build/ and could ship files the checkout no longer has.
    src = root / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", "tune_div_results", "runs"
        ),
    )
    pip = [str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check"]
    build = subprocess.run([*pip, "--no-build-isolation", str(src)], capture_output=True, text=True, timeout=600)
    if build.returncode != 0:  # an older setuptools in the new venv: let pip fetch a recent one to build with
        run([*pip, str(src)], root)
    outside = root / "elsewhere"
    outside.mkdir()
    return {"venv": venv, "py": py, "cwd": outside}


def test_the_installed_package_is_not_the_checkout(installed):
    where = run([str(installed["py"]), "-c", "import tune_div; print(tune_div.__file__)"], installed["cwd"]).strip()
    assert Path(where).is_relative_to(installed["venv"]) and not Path(where).is_relative_to(REPO)
    spaces = Path(where).parent / "search" / "spaces"
    assert {p.stem for p in spaces.glob("*.yaml")} == {*defenses.names(), "_train"}  # shipped as package data


def test_console_script_lists_the_subcommands_and_the_registries(installed):
    tune_div = str(installed["venv"] / "bin" / "tune-div")
    help_text = run([tune_div, "--help"], installed["cwd"])
    for command in ("list", "search", "train", "evaluate", "export", "ui"):
        assert f"\n  {command} " in help_text
    listed = run([tune_div, "list"], installed["cwd"])
    for name in [*defenses.names(), *data.names(), *models.names(), *attacks.names()]:
        assert name in listed


def test_one_trial_search_from_outside_the_checkout(installed, real_data):
    out = installed["cwd"] / "results"
    env = {**os.environ, "TUNE_DIV_DATA": str(real_data)}
    printed = run(
        [
            str(installed["venv"] / "bin" / "tune-div"),
            "search",
            "naive",
            "--budget",
            "smoke",
            "--samples",
            "1",
            "--epochs",
            "1",
            "--subset",
            "1000",
            "--storage-path",
            str(out),
            "--experiment",
            "pkg",
        ],
        installed["cwd"],
        env=env,
    )
    assert "1 trials: 1 finished" in printed
    assert (out / "pkg" / "pareto.json").is_file() and (out / "pkg" / "search_space.yaml").is_file()


def test_python_m_entry_points_are_the_same_commands(tmp_path):
    listed = run([sys.executable, "-m", "tune_div", "list", "defenses"], tmp_path)
    assert listed.startswith("defenses:") and all(n in listed for n in defenses.names())
    for module, command in (
        ("tune_div.search", "search"),
        ("tune_div.train", "train"),
        ("tune_div.evaluate", "evaluate"),
        ("tune_div.export", "export"),
        ("tune_div.ui", "ui"),
    ):
        usage = run([sys.executable, "-m", module, "--help"], tmp_path)
        assert usage.startswith(f"usage: python -m {module}"), (command, usage[:200])
    p = subprocess.run([sys.executable, "-m", "tune_div", "serach"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "invalid choice: 'serach'" in p.stderr
