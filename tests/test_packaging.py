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


def fresh_venv(root: Path) -> Path:
    """A new venv whose pinned dependencies come from the test environment (a .pth line), so only
    tune_div itself is installed anew: that is what is under test."""
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], root)
    py = venv / "bin" / "python"
    site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root).strip())
    (site / "tune_div_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py


def source_copy(root: Path) -> Path:
    """The checkout without its build outputs: an in-tree build reuses build/ and could ship files the
    checkout no longer has."""
    src = root / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "tune_div_results", "runs"
        ),
    )
    return src


def install(py: Path, target: str, root: Path) -> None:
    pip = [str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check"]
    build = subprocess.run([*pip, "--no-build-isolation", target], capture_output=True, text=True, timeout=600)
    if build.returncode != 0:  # an older setuptools in the new venv: let pip fetch a recent one to build with
        run([*pip, target], root)


@pytest.fixture(scope="module", params=["wheel", "sdist"])
def installed(request, tmp_path_factory):
    """tune_div installed, not editable, into a fresh venv: from a wheel built from the checkout, or from
    an sdist (which must carry the top-level ``search_spaces/`` to build a working wheel of its own)."""
    root = tmp_path_factory.mktemp(f"install_{request.param}")
    py = fresh_venv(root)
    src = source_copy(root)
    dist = root / "dist"
    # the build backend itself (PEP 517), as pip and `python -m build` call it
    hook = "build_wheel" if request.param == "wheel" else "build_sdist"
    run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.{hook}({str(dist)!r})"], src)
    (artifact,) = dist.iterdir()
    shutil.rmtree(src)  # the install must not read the sources it was built from
    install(py, str(artifact), root)
    outside = root / "elsewhere"
    outside.mkdir()
    return {"venv": py.parent.parent, "py": py, "cwd": outside, "kind": request.param, "artifact": artifact}


def test_the_package_list_is_every_package_on_disk():
    """pyproject.toml lists the packages by hand (the search_spaces mapping needs it): a new subpackage
    that is not listed would be missing from every install."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    inits = (REPO / "tune_div").rglob("__init__.py")
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in inits} | {"tune_div.search_spaces"}
    assert listed == on_disk


def test_the_installed_package_is_not_the_checkout(installed):
    where = run([str(installed["py"]), "-c", "import tune_div; print(tune_div.__file__)"], installed["cwd"]).strip()
    assert Path(where).is_relative_to(installed["venv"]) and not Path(where).is_relative_to(REPO)
    spaces = Path(where).parent / "search_spaces"  # the top-level search_spaces/, as package data
    assert {p.stem for p in spaces.glob("*.yaml")} == {*defenses.names(), "_train"}
    assert (spaces / "README.md").is_file()


def test_the_installed_spaces_load_and_round_trip(installed, tmp_path):
    """Every shipped space loads from the install; the effective space it writes loads again with --space."""
    code = (
        "import sys; from tune_div import defenses; from tune_div.search import space\n"
        "for name in defenses.names():\n"
        "    s = space.load(name)\n"
        "    assert s.source == f'search_spaces/{name}.yaml', s.source\n"
        "s = space.load('smd'); p = sys.argv[1]; open(p, 'w').write(s.to_yaml())\n"
        "again = space.load('smd', p)\n"
        "assert [q.name for q in again.params] == [q.name for q in s.params]\n"
        "print('ok', len(s.params))\n"
    )
    out = run([str(installed["py"]), "-c", code, str(tmp_path / "search_space.yaml")], installed["cwd"])
    assert out.startswith("ok ")


def test_console_script_lists_the_subcommands_and_the_registries(installed):
    tune_div = str(installed["venv"] / "bin" / "tune-div")
    help_text = run([tune_div, "--help"], installed["cwd"])
    for command in ("list", "search", "train", "evaluate", "export", "ui"):
        assert f"\n  {command} " in help_text
    listed = run([tune_div, "list"], installed["cwd"])
    for name in [*defenses.names(), *data.names(), *models.names(), *attacks.names()]:
        assert name in listed


def test_one_trial_search_from_outside_the_checkout(installed, real_data):
    if installed["kind"] != "wheel":
        pytest.skip("one real search, from the wheel install; the sdist install is checked by the tests above")
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
