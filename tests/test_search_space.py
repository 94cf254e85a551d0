"""Search-space files: every shipped space loads; bad files give one error naming file and key."""

from __future__ import annotations

import optuna
import pytest
import yaml

from tune_div import defenses, search_space
from tune_div.errors import UserError


@pytest.mark.parametrize("defense", defenses.names())
def test_every_defense_has_a_valid_space_containing_the_paper_values(defense):
    space = search_space.load(defense)
    assert space.defense == defense
    paper = defenses.defaults(defense, "mnist")
    for name, value in space.paper_point().items():
        key = name.split("/", 1)[1]
        if name.startswith("hparams/"):
            assert value == pytest.approx(paper[key])


def write(tmp_path, doc) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


BASE = {"defense": "smd", "params": {"lam": {"type": "log_float", "low": 0.01, "high": 10.0, "paper": 1.0}}}


@pytest.mark.parametrize("change,key,needle", [
    ({"extra": 1}, "extra", "unknown key"),
    ({"params": {"lam": {"type": "float", "low": 5.0, "high": 1.0}}}, "params.lam", "inverted range"),
    ({"params": {"lam": {"type": "log_float", "low": 0.0, "high": 1.0}}}, "params.lam", "positive low bound"),
    ({"params": {"alpha": {"type": "float", "low": 0.0, "high": 1.0}}}, "params.alpha", "no such hyperparameter"),
    ({"params": {"lam": {"type": "float", "low": 0.0, "high": 1.0, "paper": 3.0}}}, "params.lam", "outside"),
    ({"params": {"lam": {"type": "gaussian", "low": 0.0, "high": 1.0}}}, "params.lam", "type must be"),
    ({"params": {"lam": {"type": "float", "low": 0.0, "high": 1.0, "scale": 2}}}, "params.lam", "unknown key"),
    ({"params": {"lam": {"type": "categorical", "choices": []}}}, "params.lam", "non-empty"),
    ({"train": {"momentum": {"type": "float", "low": 0.0, "high": 1.0, "enabled": True}}}, "train.momentum",
     "unknown training parameter"),
    ({"params": {"lam": {"type": "float", "low": 0.1, "high": 1.0, "when": {"gamma": [1]}}}}, "params.lam.when",
     "not an enabled parameter"),
    ({"defense": "dropout"}, "defense", "unknown defense"),
])
def test_bad_space_files(tmp_path, change, key, needle):
    path = write(tmp_path, {**BASE, **change})
    with pytest.raises(UserError) as exc:
        search_space.load("smd" if change.get("defense") != "dropout" else "smd", path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: {key}:") and needle in msg and "\n" not in msg


def test_conditional_parameters_and_paper_point_first(tmp_path):
    doc = {"defense": "smd", "params": {"lam": {"type": "log_float", "low": 0.01, "high": 10.0, "paper": 1.0}},
           "train": {"adv_attack": {"type": "categorical", "choices": ["none", "pgd"], "paper": "none", "enabled": True},
                     "adv_eps": {"type": "float", "low": 0.05, "high": 0.3, "paper": 0.1, "enabled": True,
                                 "when": {"adv_attack": ["pgd"]}}}}
    space = search_space.load("smd", write(tmp_path, doc))
    assert space.paper_point() == {"hparams/lam": 1.0, "train/adv_attack": "none"}
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(space.paper_point())
    seen = []
    for _ in range(30):
        t = study.ask()
        space.define_by_run(t)
        seen.append(dict(t.params))
        study.tell(t, [0.5, 0.5])
    assert seen[0] == {"hparams/lam": 1.0, "train/adv_attack": "none"}
    assert all(("train/adv_eps" in p) == (p["train/adv_attack"] == "pgd") for p in seen)
    assert any("train/adv_eps" in p for p in seen)
    assert search_space.apply({"train": {"adv_attack": "pgd", "adv_eps": 0.2, "lr": 0.01}}) == \
        {"lr": 0.01, "adv_train": {"attack": "pgd", "eps": 0.2}}
