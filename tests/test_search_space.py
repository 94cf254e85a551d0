"""Search-space files: every shipped space loads; bad files give one error naming file and key."""

from __future__ import annotations

import optuna
import pytest
import yaml

from tune_div import data, defenses
from tune_div.errors import UserError
from tune_div.search import space as search_space


@pytest.mark.parametrize("dataset", data.names())
@pytest.mark.parametrize("defense", defenses.names())
def test_every_shipped_space_loads_for_every_dataset(defense, dataset):
    space = search_space.load(defense, dataset=dataset)
    assert space.defense == defense and space.dataset == dataset
    assert {n.split("/", 1)[0] for n in space.names()} <= {"hparams"}  # the shared training block is off


# The CLDL paper's (gamma, alpha, beta) per dataset, typed from the paper (Wang & Liu, Sec. 5.1).
CLDL_PAPER = {"mnist": (3.0, 4.0, 4.0), "fashion_mnist": (3.0, 2.0, 4.0), "cifar10": (4.0, 2.0, 4.0)}


@pytest.mark.parametrize("dataset", list(CLDL_PAPER))
def test_the_first_trial_starts_from_the_papers_values_for_the_dataset_searched(dataset):
    point = search_space.load("cldl", dataset=dataset).paper_point()
    assert (point["hparams/gamma"], point["hparams/alpha"], point["hparams/beta"]) == CLDL_PAPER[dataset]
    assert search_space.load("gal", dataset=dataset).paper_point() == {"hparams/lam": 0.5}  # GAL paper's λ


def test_a_space_file_enables_a_shared_training_parameter_by_name(tmp_path):
    path = write(
        tmp_path, {"defense": "smd", "params": {}, "train": {"lr": {"enabled": True}, "adv_attack": {"enabled": True}}}
    )
    space = search_space.load("smd", path, dataset="cifar10")
    assert space.names() == ["train/lr", "train/adv_attack"]
    lr = next(p for p in space.params if p.name == "train/lr")
    assert (lr.low, lr.high, lr.paper) == (1e-4, 1e-2, 1e-3)  # range from the shared block, start from TrainConfig
    attack = next(p for p in space.params if p.name == "train/adv_attack")
    assert attack.choices == ["none", "fgsm", "pgd"] and attack.paper == "none"
    # CIFAR's objective eps (0.01) lies outside the shared MNIST-scale range: the error says what to do.
    with pytest.raises(UserError, match="start value 0.01 lies outside"):
        search_space.load(
            "smd",
            write(
                tmp_path, {"defense": "smd", "train": {"adv_attack": {"enabled": True}, "adv_eps": {"enabled": True}}}
            ),
            dataset="cifar10",
        )


def test_effective_space_round_trips_through_its_yaml(tmp_path):
    path = write(
        tmp_path,
        {
            "defense": "drelu",
            "params": {"lam": {"type": "log_float", "low": 1e-4, "high": 1.0}},
            "train": {"adv_attack": {"enabled": True}, "adv_ratio": {"enabled": True}},
        },
    )
    space = search_space.load("drelu", path, dataset="mnist")
    again = tmp_path / "again.yaml"
    again.write_text(space.to_yaml())
    reloaded = search_space.load("drelu", again, dataset="fashion_mnist")
    assert [p.to_dict() for p in reloaded.params] == [p.to_dict() for p in space.params]
    assert reloaded.paper_point() == space.paper_point() == {"hparams/lam": 0.01, "train/adv_attack": "none"}


def write(tmp_path, doc) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


BASE = {"defense": "smd", "params": {"lam": {"type": "log_float", "low": 0.01, "high": 10.0, "paper": 1.0}}}


@pytest.mark.parametrize(
    "change,key,needle",
    [
        ({"extra": 1}, "extra", "unknown key"),
        ({"params": {"lam": {"type": "float", "low": 5.0, "high": 1.0}}}, "params.lam", "inverted range"),
        ({"params": {"lam": {"type": "log_float", "low": 0.0, "high": 1.0}}}, "params.lam", "positive low bound"),
        ({"params": {"alpha": {"type": "float", "low": 0.0, "high": 1.0}}}, "params.alpha", "no such hyperparameter"),
        ({"params": {"lam": {"type": "float", "low": 0.0, "high": 1.0, "paper": 3.0}}}, "params.lam", "outside"),
        ({"params": {"lam": {"type": "float", "low": 2.0, "high": 9.0}}}, "params.lam", "start value 1.0 lies outside"),
        (
            {"params": {"lam": {"type": "float", "low": 0.1, "high": 2.0, "when": {"x": "y"}}}},
            "params.lam",
            "'when' must",
        ),
        ({"params": ["lam"]}, "params", "expected a mapping"),
        ({"params": {"lam": {"type": "gaussian", "low": 0.0, "high": 1.0}}}, "params.lam", "type must be"),
        ({"params": {"lam": {"type": "float", "low": 0.0, "high": 1.0, "scale": 2}}}, "params.lam", "unknown key"),
        ({"params": {"lam": {"type": "categorical", "choices": []}}}, "params.lam", "non-empty"),
        (
            {"train": {"momentum": {"type": "float", "low": 0.0, "high": 1.0, "enabled": True}}},
            "train.momentum",
            "unknown training parameter",
        ),
        (
            {"params": {"lam": {"type": "float", "low": 0.1, "high": 1.0, "when": {"gamma": [1]}}}},
            "params.lam.when",
            "not an enabled parameter",
        ),
        ({"defense": "dropout"}, "defense", "unknown defense"),
    ],
)
def test_bad_space_files(tmp_path, change, key, needle):
    path = write(tmp_path, {**BASE, **change})
    with pytest.raises(UserError) as exc:
        search_space.load("smd" if change.get("defense") != "dropout" else "smd", path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: {key}:") and needle in msg and "\n" not in msg


@pytest.mark.parametrize("when", [{"adv_attack": ["pgd"]}, {"adv_attack": {"not": ["none"]}}])
def test_conditional_parameters_and_paper_point_first(tmp_path, when):
    doc = {
        "defense": "smd",
        "params": {"lam": {"type": "log_float", "low": 0.01, "high": 10.0, "paper": 1.0}},
        "train": {
            "adv_attack": {"type": "categorical", "choices": ["none", "pgd"], "paper": "none", "enabled": True},
            "adv_eps": {"type": "float", "low": 0.05, "high": 0.3, "paper": 0.1, "enabled": True, "when": when},
        },
    }
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
    assert search_space.apply({"adv_attack": "pgd", "adv_eps": 0.2, "lr": 0.01}) == {
        "lr": 0.01,
        "adv_train": {"attack": "pgd", "eps": 0.2},
    }
