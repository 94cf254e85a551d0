"""Every command against a catalogue of bad input, run as a user runs it (a subprocess of ``python -m
tune_div``): exit code 2, exactly one line on stderr naming the problem, no traceback, and nothing new
or changed in the folder it was run from (docs/errors.md).

A new kind of bad input is one row in CASES; ``@name`` in an argument is a file of the ``files``
fixture (made once, read-only for every case)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tune_div import models
from tune_div.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("real_data")

GOOD_CONFIG = {
    "defense": "smd",
    "dataset": "mnist",
    "arch": "lenet5",
    "n_members": 2,
    "hparams": {"lam": 0.5},
    "train": {"epochs": 1, "subset": 64, "val_subset": 50},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory, real_data):
    """Input files of every kind, good and bad, in a folder of their own."""
    d = tmp_path_factory.mktemp("inputs")
    good = models.build_ensemble("lenet5", 2, 10, 1)
    models.save_ensemble(good, d / "good.pt")
    blob = (d / "good.pt").read_bytes()
    (d / "cut.pt").write_bytes(blob[: len(blob) // 2])
    (d / "text.pt").write_text("this is not a model\n")
    torch.save({"weights": torch.zeros(2)}, d / "foreign.pt")
    models.save_ensemble(models.build_ensemble("lenet5", 2, 10, 3), d / "cifar_shaped.pt")
    trainer = Trainer(TrainConfig(defense="naive", data_dir=str(real_data), subset=64, val_subset=50))
    trainer.save_checkpoint(d / "naive_ckpt.pt")
    (d / "cut_ckpt.pt").write_bytes((d / "naive_ckpt.pt").read_bytes()[:2000])
    (d / "not_yaml.yaml").write_text("defense: smd\n  lam: [1, 2\n")
    (d / "list.yaml").write_text("- smd\n- gal\n")
    for name, doc in {
        "bad_train_key": {**GOOD_CONFIG, "train": {"epochz": 1}},
        "bad_objective": {**GOOD_CONFIG, "objective": {"attack": "pgd", "eps": 5}},
        "hparams_list": {**GOOD_CONFIG, "hparams": [0.5]},
        "bad_lam": {**GOOD_CONFIG, "hparams": {"lam": -1}},
        "float_epochs": {**GOOD_CONFIG, "train": {"epochs": 1.5}},
        "space_eps_domain": {
            "defense": "dverge",
            "params": {"distill_eps": {"type": "float", "low": 0.01, "high": 2.0}},
        },
        "space_int_domain": {"defense": "dverge", "params": {"distill_steps": {"type": "float", "low": 1, "high": 20}}},
        "space_inverted": {"defense": "smd", "params": {"lam": {"type": "float", "low": 2, "high": 1}}},
    }.items():
        (d / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    (d / "notadb.db").write_text("not a database")
    for name, content in {
        "garbage": "{not json",
        "foreign": json.dumps({"hello": 1}),
        "bad_value": json.dumps(
            {
                "defense": "smd",
                "dataset": "mnist",
                "arch": "lenet5",
                "members": -3,
                "epochs": 1,
                "samples": 1,
                "budget": "smoke",
                "sampler": "tpe",
                "objective": "robust",
                "clean_floor": None,
                "gpus": 0,
                "gpus_per_trial": 0,
                "cpus_per_trial": 1,
                "concurrency": None,
                "seed": 0,
                "space_file": None,
                "data_dir": None,
                "inject_nan_if": None,
                "experiment": "x",
                "storage_path": "/x",
            }
        ),
    }.items():
        (d / "experiments" / name).mkdir(parents=True)
        (d / "experiments" / name / "search.json").write_text(content)
    valid = json.loads((d / "experiments" / "bad_value" / "search.json").read_text())
    (d / "experiments" / "never_started").mkdir()
    (d / "experiments" / "never_started" / "search.json").write_text(json.dumps({**valid, "members": 3}))
    raw = d / "corrupt_data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (real_data / "MNIST" / "raw").iterdir():
        raw.joinpath(f.name).write_bytes(f.read_bytes() + (b"junk" if "t10k-labels" in f.name else b""))
    (d / "empty_data").mkdir()
    for p in d.rglob("*"):
        p.chmod(0o555 if p.is_dir() else 0o444)
    yield d
    for p in d.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)


CASES = [
    # train: options, hyperparameters, checkpoints, exported configs, data
    ("train", "--defense bogus", "unknown defense 'bogus'"),
    ("train", "--defense smd --lr -1", "lr=-1.0 is not valid; expected a number > 0"),
    ("train", "--defense smd --seed -1", "seed=-1 is not valid"),
    ("train", "--defense smd --hparam lam=-2", "lam=-2 is not valid; expected a number >= 0"),
    ("train", "--defense gal --hparam lam=abc", "lam='abc' is not valid"),
    ("train", "--defense dverge --hparam distill_steps=2.5", "distill_steps=2.5 is not valid; expected an integer"),
    ("train", "--defense smd --hparam =1", "expects key=value"),
    ("train", "--defense naive --adv-train pgd:steps=0", "steps=0 is not valid"),
    ("train", "--defense naive --adv-train cw_l2", "adv_train attack must be one of fgsm, pgd"),
    ("train", "--defense naive --adv-train pgd:eps=1.5", "eps=1.5 is not valid"),
    ("train", "--defense naive --test-subset 0", "points=0 is not valid"),
    ("train", "--defense naive --checkpoint @cut_ckpt.pt", "damaged or not a tune_div checkpoint"),
    ("train", "--defense smd --checkpoint @naive_ckpt.pt", "was written for another config (defense"),
    ("train", "--defense naive --save-model @experiments", "is a folder"),
    ("train", "--config @not_yaml.yaml", "not valid YAML"),
    ("train", "--config @list.yaml", "expected a mapping with at least 'defense'"),
    ("train", "--config @bad_train_key.yaml", "unknown training option(s) ['epochz']"),
    ("train", "--config @bad_objective.yaml", "eps=5 is not valid"),
    ("train", "--config @hparams_list.yaml", "'hparams' must be a mapping"),
    ("train", "--config @bad_lam.yaml", "lam=-1 is not valid"),
    ("train", "--config @float_epochs.yaml", "epochs=1.5 is not valid; expected an integer"),
    ("train", "--config @missing.yaml", "does not exist"),
    ("train", "--defense naive --data-dir @corrupt_data", "is corrupt"),
    ("train", "--defense naive --tracking-uri sqlite:///@notadb.db", "cannot be read"),
    ("train", "--defense naive --data-dir @empty_data", "not found"),
    # evaluate: model files, attack options, radii
    ("evaluate", "--model @text.pt --dataset mnist", "cannot be read as a tune_div ensemble"),
    ("evaluate", "--model @cut.pt --dataset mnist", "cannot be read as a tune_div ensemble"),
    ("evaluate", "--model @foreign.pt --dataset mnist", "is not a tune_div ensemble file"),
    ("evaluate", "--model @missing.pt --dataset mnist", "no saved ensemble"),
    ("evaluate", "--model @cifar_shaped.pt --dataset mnist", "takes 3-channel images"),
    ("evaluate", "--model @good.pt --dataset mnist --attack-option pgd:steps=-3", "steps=-3 is not valid"),
    ("evaluate", "--model @good.pt --dataset mnist --attack-option pgd:rand_init=3", "rand_init=3 is not valid"),
    (
        "evaluate",
        "--model @good.pt --dataset mnist --attacks square --attack-option square:p_init=2",
        "p_init=2 is not valid",
    ),
    ("evaluate", "--model @good.pt --dataset mnist --attack-option pgd:steps", "expects key=value"),
    ("evaluate", "--model @good.pt --dataset mnist --eps 1.5", "eps=1.5 is not valid; expected a number in (0, 1]"),
    ("evaluate", "--model @good.pt --dataset mnist --eps 0", "eps=0.0 is not valid"),
    ("evaluate", "--model @good.pt --dataset mnist --eps nan", "eps=nan is not valid"),
    ("evaluate", "--model @good.pt --dataset mnist --n 0", "--n must be a positive number"),
    ("evaluate", "--model @good.pt --dataset mnist --audit quick", "invalid choice: 'quick'"),
    ("evaluate", "--model @good.pt --dataset mnist --surrogate-epochs 0", "epochs=0 is not valid"),
    ("evaluate", "--model @good.pt --dataset mnist --out @experiments", "is a folder"),
    # search: options, space files, resume folders, stores
    ("search", "bogus", "unknown defense 'bogus'"),
    ("search", "smd --samples 0", "--samples=0 is not valid; expected an integer >= 1"),
    ("search", "smd --seed -2", "seed=-2 is not valid"),
    ("search", "smd --experiment a/b", "must be a folder name"),
    ("search", "smd --space @not_yaml.yaml", "not valid YAML"),
    ("search", "dverge --space @space_eps_domain.yaml", "2.0 is outside what 'distill_eps' takes"),
    ("search", "dverge --space @space_int_domain.yaml", "use type int or log_int"),
    ("search", "smd --space @space_inverted.yaml", "inverted range"),
    ("search", "--resume @experiments/garbage", "is damaged or from another version"),
    ("search", "--resume @experiments/foreign", "is damaged or from another version"),
    ("search", "--resume @experiments/bad_value", "members=-3 is not valid"),
    ("search", "--resume @experiments/never_started", "holds no Ray experiment state"),
    ("search", "smd --tracking-uri sqlite:///@notadb.db", "cannot be read"),
    ("search", "smd --tracking-uri http://127.0.0.1:1", "cannot reach the MLflow server"),
    # export, ui, list
    ("export", "--experiment smd-mnist --out cfg", "no MLflow store at"),
    ("export", "--experiment smd-mnist --tracking-uri sqlite:///@notadb.db --out cfg", "cannot be read"),
    ("export", "--experiment smd-mnist --out @good.pt", "is a file; name a folder"),
    ("export", "--experiment smd-mnist --clean-floor 2 --out cfg", "--clean-floor is an accuracy in [0, 1]"),
    ("ui", "--port 0", "port=0 is not valid"),
    ("ui", "--tracking-uri sqlite:///@notadb.db", "cannot be read"),
    ("list", "widgets", "invalid choice: 'widgets'"),
]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("command,args,needle", CASES, ids=[f"{c}: {a}" for c, a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(command, args, needle, files, real_data, tmp_path):
    argv = [re.sub(r"@([\w./]+)", lambda m: str(files / m.group(1)), a) for a in args.split()]
    work = tmp_path / "work"
    work.mkdir()
    before = snapshot(work), snapshot(files)
    env = {**os.environ, "TUNE_DIV_DATA": str(real_data), "TUNE_DIV_CACHE": str(tmp_path / "cache")}
    p = subprocess.run(
        [sys.executable, "-m", "tune_div", command, *argv],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = p.stderr.strip()
    assert p.returncode == 2, (p.returncode, err[-2000:], p.stdout[-500:])
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err + p.stdout
    assert needle in err, err
    assert (snapshot(work), snapshot(files)) == before  # nothing new, nothing changed
