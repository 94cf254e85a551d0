"""Threat models, the surrogate cache, flags on masked and on normal models, the evaluate CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tune_div import eval as evaluation
from tune_div import models
from tune_div.cli import evaluate as evaluate_cli
from tune_div.eval import EvalSpec, accuracy, sanity_checks, sanity_flags, threat_models
from tune_div.eval import surrogate as surrogate_module

pytestmark = pytest.mark.usefixtures("real_data")


class StepOutput(nn.Module):
    """A step function before the output: same predictions (rounded logits), zero gradient everywhere."""

    def __init__(self, member):
        super().__init__()
        self.member = member

    def forward(self, x):
        return torch.round(self.member(x) * 4) / 4


def masked_by_steps(ens):
    return models.Ensemble([StepOutput(m) for m in ens.members], ens.config).eval()


def masked_by_zero_caps():
    """D-ReLU with every cap at zero: the capped layer outputs 0, the model is flat in its input."""
    from tune_div import defenses

    d = defenses.build("drelu", init_max=0.0, width=16)
    return models.build_ensemble("lenet5", 2, 10, 1, **d.model_options).eval()


def flag_names(flags):
    return {f["name"] for f in flags}


def test_flags_stay_quiet_on_a_normally_trained_model(trained_ensemble, eval_points):
    x, y = eval_points
    checks = sanity_checks(trained_ensemble, x, y, 0.1)
    assert sanity_flags(checks) == [], checks
    assert checks["large_eps_pgd_acc"] <= 0.05 and checks["vanishing_gradient_share"] == 0.0


@pytest.mark.parametrize("build", ["steps", "zero_caps"])
def test_flags_fire_on_gradient_masking_models(build, trained_ensemble, eval_points):
    x, y = eval_points
    model = masked_by_steps(trained_ensemble) if build == "steps" else masked_by_zero_caps()
    flags = flag_names(sanity_flags(sanity_checks(model, x, y, 0.1)))
    assert "vanishing_input_gradients" in flags
    if build == "steps":  # predictions intact, yet no attack gets anywhere
        assert accuracy(model, x, y) > 0.8
        assert "not_zero_at_large_eps" in flags


def test_each_flag_rule_fires_on_constructed_numbers():
    checks = {
        "eps": 0.1,
        "fgsm_acc": 0.3,
        "pgd_acc": 0.5,
        "pgd_curve": {"0.05": 0.4, "0.1": 0.5, "1.0": 0.6},
        "large_eps_pgd_acc": 0.6,
        "vanishing_gradient_share": 0.5,
    }
    white = {"pgd": {"0.1": 0.5, "0.2": 0.7}, "fgsm": {"0.1": 0.3, "0.2": 0.2}}
    black = {"pgd": {"0.1": 0.4, "0.2": 0.9}}
    names = [f["name"] for f in sanity_flags(checks, white, black)]
    assert set(names) == {
        "iterative_weaker_than_single_step",
        "white_box_weaker_than_transfer",
        "accuracy_increases_with_eps",
        "not_zero_at_large_eps",
        "vanishing_input_gradients",
    }
    assert all(f["doc"].startswith("docs/flags.md#") for f in sanity_flags(checks, white, black))


def test_transfer_matrix_diagonal_is_each_members_white_box(trained_ensemble, eval_points):
    x, y = eval_points[0][:100], eval_points[1][:100]
    torch.manual_seed(0)
    m = evaluation.transfer_matrix(trained_ensemble, x, y, "fgsm", 0.2)
    assert m["names"] == ["m0", "m1", "ensemble"] and len(m["acc"]) == 3 and all(len(r) == 3 for r in m["acc"])
    for i in range(3):  # crafting on a model hurts that model most
        assert m["acc"][i][i] <= min(m["acc"][i]) + 1e-9
    assert m["acc"][0][1] > m["acc"][0][0]  # transfer is weaker than white-box


def test_surrogate_is_trained_once_and_its_examples_are_cached(trained_ensemble, real_data, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNE_DIV_CACHE", str(tmp_path))
    spec = EvalSpec(
        dataset="mnist",
        attacks=["pgd"],
        eps=[0.1, 0.2],
        n=100,
        black_box=True,
        sanity=False,
        surrogate_epochs=1,
        surrogate_subset=2000,
        data_dir=str(real_data),
    )
    first = evaluation.evaluate(trained_ensemble, spec)
    fits = []
    monkeypatch.setattr(surrogate_module.Trainer, "fit", lambda self, *a, **k: fits.append(1))
    crafted = []
    real_craft = evaluation.craft
    for module in (surrogate_module, threat_models):
        monkeypatch.setattr(module, "craft", lambda *a, **k: crafted.append(a[0]) or real_craft(*a, **k))
    second = evaluation.evaluate(trained_ensemble, spec)
    bb1, bb2 = first["threat_models"]["black_box"], second["threat_models"]["black_box"]
    assert bb1["surrogate"]["trained_now"] and not bb2["surrogate"]["trained_now"] and fits == []
    assert bb1["cached_attacks"] == 0 and bb2["cached_attacks"] == 2
    assert crafted == ["pgd", "pgd"]  # only the white-box attacks were crafted again
    assert bb1["acc"] == bb2["acc"]
    assert bb2["surrogate"]["key"] == bb1["surrogate"]["key"]
    # Another training routine is another surrogate: the key covers the whole config.
    assert (
        evaluation.config_key(evaluation.surrogate_config(trained_ensemble.config, "mnist", 2, 1000))
        != bb1["surrogate"]["key"]
    )


def test_one_epoch_naive_on_real_mnist_cli(real_data, tmp_path, monkeypatch, capsys):
    """The issue's acceptance run: 1-epoch naive ensemble on real MNIST, PGD/FGSM, black-box, JSON."""
    from tune_div.cli import train

    monkeypatch.setenv("TUNE_DIV_CACHE", str(tmp_path / "cache"))
    model, out = tmp_path / "ens.pt", tmp_path / "r.json"
    assert (
        train.main(
            [
                "--defense",
                "naive",
                "--data-dir",
                str(real_data),
                "--epochs",
                "1",
                "--test-subset",
                "100",
                "--save-model",
                str(model),
            ]
        )
        == 0
    )
    assert (
        evaluate_cli.main(
            [
                "--model",
                str(model),
                "--dataset",
                "mnist",
                "--attacks",
                "pgd,fgsm",
                "--eps",
                "0.1,0.3",
                "--n",
                "1000",
                "--black-box",
                "--surrogate-epochs",
                "1",
                "--data-dir",
                str(real_data),
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    wb, bb = r["threat_models"]["white_box"], r["threat_models"]["black_box"]["acc"]
    assert r["n"] == 1000 and r["clean_acc"] > 0.95 and r["forward_passes_per_prediction"] == 3
    assert wb["pgd"]["0.3"] < 0.05
    assert wb["fgsm"]["0.1"] > wb["pgd"]["0.1"]
    assert bb["pgd"]["0.1"] > wb["pgd"]["0.1"] and bb["fgsm"]["0.1"] > wb["fgsm"]["0.1"]
    assert r["flags"] == []
    assert "white-box pgd" in capsys.readouterr().out
    # every accuracy with its 95% Wilson interval on the same 1000 points
    from scipy.stats import binomtest

    def wilson(acc):
        ci = binomtest(round(acc * 1000), 1000).proportion_ci(method="wilson")
        return [ci.low, ci.high]

    assert r["clean_acc_n"] == 1000 and [r["clean_acc_ci_low"], r["clean_acc_ci_high"]] == wilson(r["clean_acc"])
    ci = r["intervals"]
    assert ci["n"] == 1000 and ci["method"] == "wilson"
    assert ci["white_box"]["pgd"]["0.1"] == pytest.approx(wilson(wb["pgd"]["0.1"]))
    assert ci["black_box"]["fgsm"]["0.3"] == pytest.approx(wilson(bb["fgsm"]["0.3"]))


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--model", "missing.pt", "--dataset", "mnist"], "no saved ensemble"),
        (["--model", "M", "--dataset", "mnist", "--attacks", "deepfool"], "unknown attack"),
        (["--model", "M", "--dataset", "mnist", "--eps", "0.1,abc"], "comma-separated numbers"),
        (["--model", "M", "--dataset", "mnist", "--n", "-5"], "--n must be"),
        (["--model", "M", "--dataset", "cifar10"], "3 and 10"),
        (["--model", "M", "--dataset", "mnist", "--attack-option", "pgd:iters=3"], "unknown option"),
        (["--model", "M", "--dataset", "mnist", "--out", "/no/such/dir/r.json"], "cannot write"),
    ],
)
def test_evaluate_cli_bad_input(argv, needle, tmp_path, monkeypatch, capsys, trained_ensemble):
    monkeypatch.chdir(tmp_path)
    models.save_ensemble(trained_ensemble, tmp_path / "M")
    with pytest.raises(SystemExit) as exc:
        evaluate_cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and needle in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["M"]


def test_evaluate_cli_curves_and_transfer_matrix(trained_ensemble, real_data, tmp_path, capsys):
    model, out = tmp_path / "ens.pt", tmp_path / "r.json"
    models.save_ensemble(trained_ensemble, model)
    assert (
        evaluate_cli.main(
            [
                "--model",
                str(model),
                "--dataset",
                "mnist",
                "--attacks",
                "pgd",
                "--eps",
                "0.1",
                "--n",
                "200",
                "--curves",
                "--transfer-matrix",
                "--attack-option",
                "pgd:steps=5",
                "--no-sanity",
                "--data-dir",
                str(real_data),
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    assert r["attacks"]["pgd"]["options"]["steps"] == 5  # the override reached the attack
    curve = r["curves"]["pgd"]
    assert curve["eps"] == [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]  # the MNIST grid of the papers
    assert all(a2 <= a1 + 0.02 for a1, a2 in zip(curve["acc"], curve["acc"][1:]))  # a working attack: falling
    assert curve["acc"][-1] < curve["acc"][0] - 0.3
    m = r["threat_models"]["transfer_matrix"]
    assert m["names"] == ["m0", "m1", "ensemble"] and (m["attack"], m["eps"]) == ("pgd", 0.1)
    for i, row in enumerate(m["acc"][:2]):
        assert row[i] <= min(row) + 1e-9  # examples crafted on a member hurt that member most
    printed = capsys.readouterr().out
    assert "transferability (pgd, eps=0.1)" in printed and printed.count("ensemble") >= 2


def test_worst_of_versions_counts_a_point_only_if_it_survives_every_version():
    """Stub surrogates whose 'adversarial examples' are set per version, and a model that reads its
    prediction off the first pixel: the worst-of-versions accuracy is worked out by hand."""
    from tune_div.eval.threat_models import worst_of_versions
    from tune_div.train import TrainConfig

    y = torch.tensor([0, 1, 2, 3])

    class FirstPixel(torch.nn.Module):  # predicts class round(10 * x[0, 0, 0])
        def forward(self, x):
            return torch.nn.functional.one_hot((10 * x[:, 0, 0, 0]).round().long(), 10).float().log_softmax(1)

    def images(labels):
        x = torch.zeros(len(labels), 1, 2, 2)
        x[:, 0, 0, 0] = torch.tensor(labels, dtype=torch.float) / 10
        return x

    # what the model predicts on each version's examples, per (surrogate, loss): a wrong label is a hit
    predicted = {
        (0, "ce"): [0, 1, 2, 3],
        (0, "cw"): [9, 1, 2, 3],
        (1, "ce"): [0, 1, 9, 3],
        (1, "cw"): [0, 1, 2, 3],
    }
    calls = []

    class Stub:
        def __init__(self, k):
            self.k = k
            self.cfg = TrainConfig(defense="naive", n_members=3 + 2 * k, seed=1000 + k)

        def model(self, log):
            return None

        def adversarial(self, attack, eps, options, subset_key, x, y, progress=None):
            loss = options.get("loss", "ce")
            calls.append((self.k, attack, loss))
            return images(predicted[(self.k, loss)]), False

    spec = EvalSpec(dataset="mnist", attacks=["pgd", "pgd_cw"], eps=[0.1], black_box=True, version_surrogates=[{}])
    out = worst_of_versions(
        FirstPixel(),
        [Stub(0), Stub(1)],
        spec,
        {"pgd": {}, "pgd_cw": {}},
        "k",
        images([0, 1, 2, 3]),
        y,
        lambda label, total=0: lambda k: None,
        print,
    )
    assert out["acc"] == {"pgd": {"0.1": 0.5}}  # points 0 and 2 fall to one version each; pgd_cw has no loss option
    assert out["versions"] == 4 and out["losses"] == ["ce", "cw"]
    assert [s["n_members"] for s in out["surrogates"]] == [3, 5]
    assert sorted(calls) == [(0, "pgd", "ce"), (0, "pgd", "cw"), (1, "pgd", "ce"), (1, "pgd", "cw")]


def test_crafting_is_the_same_whatever_ran_before_and_leaves_the_callers_random_state():
    """PGD's random start and R-FGSM's step come from a generator seeded per call: an evaluation of a
    model just trained in the process and one of the same model read from the cache give the same
    numbers, and the caller's random stream goes on as if nothing had been drawn."""
    from tune_div.eval.points import craft

    torch.manual_seed(0)
    model = models.build_ensemble("dense", 1, 10, 1).eval()
    x, y = torch.rand(12, 1, 28, 28), torch.arange(12) % 10
    for attack in ("pgd", "rfgsm"):
        torch.manual_seed(1)
        first = craft(attack, model, x, y, 0.1, batch=5)
        torch.rand(1000)  # what a training step or another evaluation would draw
        again = craft(attack, model, x, y, 0.1, batch=5)
        assert torch.equal(first, again), attack
        assert not torch.equal(craft(attack, model, x, y, 0.1, batch=5, seed=1), first), attack
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    craft("pgd", model, x, y, 0.1)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream is untouched
