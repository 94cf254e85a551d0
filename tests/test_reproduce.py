"""``reproduce smd-table``: the smoke budget end to end on real MNIST, the paper's numbers as copied, the
rank agreement, the cache, the MLflow run and bad input."""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import subprocess
import sys

import pytest
from paper_texts import PAPERS

from tune_div import reproduce
from tune_div.cli import reproduce as reproduce_cli
from tune_div.reproduce.base import kendall_tau, mean_std
from tune_div.reproduce.smd_table import ATTACKS, COLUMNS, METHODS, PAPER

PAPER_TEXT = PAPERS / "smd_saliency_diversified_ensemble.txt"


@pytest.fixture(scope="module")
def smoke(real_data, tmp_path_factory):
    """One smoke run of all six methods (about a minute of CPU), through the installed command."""
    root = tmp_path_factory.mktemp("repro")
    env = {**os.environ, "TUNE_DIV_CACHE": str(root / "cache")}
    cmd = [
        sys.executable,
        "-m",
        "tune_div.reproduce",
        "smd-table",
        "--dataset",
        "mnist",
        "--budget",
        "smoke",
        "--data-dir",
        str(real_data),
        "--out",
        str(root / "out"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root, proc, cmd, env


def test_registry_lists_the_protocol():
    assert "smd-table" in reproduce.names() and reproduce.names("smd*") == ["smd-table"]


def test_smoke_run_writes_the_side_by_side_table(smoke):
    root, proc, _, _ = smoke
    out = root / "out"
    md = (out / "smd-table_mnist.md").read_text()
    assert {p.name for p in out.iterdir()} >= {
        "smd-table_mnist.md",
        "smd-table_mnist.csv",
        "smd-table_mnist.json",
        "smd-table_mnist.png",
        "mlflow.db",
    }
    doc = json.loads((out / "smd-table_mnist.json").read_text())
    assert doc["settings"]["eps"] == [0.05, 0.1, 0.15, 0.2, 0.25, 0.3] and doc["settings"]["epochs"] == 1
    # Every method, threat and eps has its row, each cell "measured (paper)" with the paper's number.
    for label, method in (("Naive", "naive"), ("SMD+", "smd_plus"), ("DVERGE", "dverge")):
        rows = [line for line in md.splitlines() if line.startswith(f"| {label} |")]
        assert len(rows) == 2 * 6
        assert f"({PAPER['white_box']['mnist'][method][3]:.1f})" in rows[0]  # PGD, white-box
        assert f"({PAPER['black_box']['mnist'][method][3]:.1f})" in rows[6]
    assert "Kendall τ" in md and "audit" in md and proc.stdout.count("| Naive |") == 12
    # one seed: each cell's 95% Wilson interval, on the test split (clean) or the n robust points
    from scipy.stats import binomtest

    n = doc["settings"]["n"]
    assert f"a proportion on {n} points: its 95% Wilson interval" in md
    for r in doc["rows"]:
        points = doc["runs"][r["method"]][0]["clean_n"] if r["column"] == "clean" else n
        ci = binomtest(round(r["measured"] / 100 * points), points).proportion_ci(method="wilson")
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((100 * ci.low, 100 * ci.high)), r


def test_csv_holds_the_seed_means_of_the_measured_accuracies(smoke):
    root = smoke[0]
    doc = json.loads((root / "out" / "smd-table_mnist.json").read_text())
    rows = list(csv.DictReader((root / "out" / "smd-table_mnist.csv").open()))
    assert len(rows) == 2 * 6 * 6 * len(COLUMNS) + 6 * 6  # threats x eps x methods x columns, + the audit column
    for r in rows:
        run = doc["runs"][r["method"]][0]
        if r["column"] == "clean":
            expected = run["clean"]
        elif r["column"] == "audit":
            expected = run["audit"][r["eps"]]
        else:
            expected = run[r["threat"]][r["column"]][r["eps"]]
        assert float(r["measured"]) == pytest.approx(100 * expected)
        if r["column"] == "audit":
            # The audit is the worst case over its attacks, never above the paper's PGD-class attacks here.
            assert float(r["measured"]) <= 100 * run["white_box"]["pgd"][r["eps"]] + 1e-9


def test_kendall_tau_matches_pair_counting():
    def by_pairs(a, b):
        s = [(a[i] - a[j]) * (b[i] - b[j]) for i, j in itertools.combinations(range(len(a)), 2)]
        return (sum(v > 0 for v in s) - sum(v < 0 for v in s)) / len(s)

    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 3.0, 2.0, 5.0, 4.0]
    assert kendall_tau(a, b) == pytest.approx(by_pairs(a, b)) == pytest.approx(0.6)
    assert kendall_tau(a, a[::-1]) == pytest.approx(-1.0)
    assert kendall_tau([1.0, 2.0], [2.0, 1.0]) is None  # too few methods to rank
    assert kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # a constant scoring has no ranking
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))


def test_taus_in_the_json_are_those_of_its_rows(smoke):
    doc = json.loads((smoke[0] / "out" / "smd-table_mnist.json").read_text())
    for threat in ("white_box", "black_box"):
        for eps in doc["settings"]["eps"]:
            for attack in ATTACKS:
                rows = [r for r in doc["rows"] if (r["threat"], r["eps"], r["column"]) == (threat, eps, attack)]
                assert [r["method"] for r in rows] == list(METHODS)
                assert doc["kendall_tau"][threat][str(eps)][attack] == kendall_tau(
                    [r["measured"] for r in rows], [r["paper"] for r in rows]
                )


@pytest.mark.skipif(not PAPER_TEXT.is_file(), reason="the paper's text is not next to the checkout")
def test_paper_numbers_are_the_papers_tables_1_and_2():
    """Parsed from our text copy of the paper: Table 1 (white-box) comes first, Table 2 (black-box) second."""
    numbers = [
        tuple(float(v) for v in re.findall(r"\d+\.\d", line))
        for line in PAPER_TEXT.read_text().splitlines()
        if re.fullmatch(r"(?:[A-Za-z.+]+ \| )?(?:\d+\.\d \| ){5}\d+\.\d \|", line.strip())
    ]
    tables = [numbers[i : i + 18] for i in (0, 18)]  # 3 datasets x 6 methods each
    for threat, rows in zip(("white_box", "black_box"), tables):
        for d, dataset in enumerate(("mnist", "fashion_mnist", "cifar10")):
            for m, method in enumerate(METHODS):
                assert PAPER[threat][dataset][method] == rows[6 * d + m], (threat, dataset, method)


def test_a_rerun_reuses_the_trained_and_evaluated_ensembles(smoke):
    root, _, cmd, env = smoke
    proc = subprocess.run(
        cmd[:-1] + [str(root / "out2"), "--methods", "naive,smd,gal", "--no-mlflow"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("trained ensemble from the cache") == 3
    assert proc.stdout.count("evaluated (from the cache)") == 3 and " epoch 1/1" not in proc.stdout
    first = json.loads((root / "out" / "smd-table_mnist.json").read_text())["runs"]
    again = json.loads((root / "out2" / "smd-table_mnist.json").read_text())["runs"]
    assert again["smd"] == first["smd"]
    assert not (root / "out2" / "mlflow.db").exists()


def test_a_rerun_without_the_cache_takes_every_model_from_its_record(smoke, tmp_path):
    """A new machine: the cache is gone, the committed ``records/`` are there; nothing trains again."""
    import shutil

    root, _, cmd, env = smoke
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    (out / "mlflow.db").unlink()
    cache = tmp_path / "empty-cache"
    proc = subprocess.run(
        cmd[:-1] + [str(out), "--no-mlflow"],
        capture_output=True,
        text=True,
        env={**env, "TUNE_DIV_CACHE": str(cache)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("from its record in") == len(METHODS) and " epoch 1/1" not in proc.stdout
    assert not (cache / "reproduce").exists() and not (cache / "surrogates").exists()  # no model, no evaluation
    first = json.loads((root / "out" / "smd-table_mnist.json").read_text())
    again = json.loads((out / "smd-table_mnist.json").read_text())
    assert again["runs"] == first["runs"] and again["rows"] == first["rows"]


def test_a_record_is_keyed_on_the_training_config_and_every_evaluation_spec(tmp_path):
    from tune_div.eval import EvalSpec
    from tune_div.reproduce.base import RunRecords
    from tune_div.train import TrainConfig

    cfg = TrainConfig(defense="smd", epochs=3, seed=1, data_dir="/somewhere")
    spec = EvalSpec(dataset="mnist", attacks=["fgsm", "pgd"], eps=[0.1], n=100, seed=0)
    records = RunRecords(tmp_path / "records")
    assert records.get("smd", cfg, [spec]) is None
    path = records.put("smd-table", "smd", cfg, [spec], {"seed": 1, "clean": 0.9})
    assert path.name.startswith("smd_seed1_") and path.parent == tmp_path / "records"
    assert records.get("smd", cfg, [spec]) == {"seed": 1, "clean": 0.9}
    assert json.loads(path.read_text())["record_of"] == "smd-table"
    # where the data lie is not part of a result; every setting that changes one is
    assert records.get("smd", TrainConfig(defense="smd", epochs=3, seed=1, data_dir="/elsewhere"), [spec])
    others = [
        (TrainConfig(defense="smd", epochs=4, seed=1), [spec]),
        (TrainConfig(defense="smd", epochs=3, seed=1, hparams={"lam": 2.0}), [spec]),
        (cfg, [EvalSpec(dataset="mnist", attacks=["fgsm", "pgd"], eps=[0.1], n=200, seed=0)]),
        (cfg, [EvalSpec(dataset="mnist", attacks=["fgsm"], eps=[0.1], n=100, seed=0)]),
        (cfg, [spec, EvalSpec(dataset="mnist", attacks=["fgsm"], eps=[0.2], n=100, seed=0)]),
    ]
    for other_cfg, specs in others:
        assert records.get("smd", other_cfg, specs) is None
    assert len({RunRecords.key(c, s) for c, s in [(cfg, [spec]), *others]}) == len(others) + 1


def test_the_mlflow_run_holds_the_table(smoke):
    from mlflow import MlflowClient

    root = smoke[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'out' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("reproduce-smd-table")
    (run,) = client.search_runs([exp.experiment_id])
    doc = json.loads((root / "out" / "smd-table_mnist.json").read_text())
    row = next(r for r in doc["rows"] if (r["threat"], r["column"], r["method"]) == ("white_box", "pgd", "smd"))
    assert run.data.metrics[f"white_box/pgd/eps_{row['eps']}/smd"] == pytest.approx(row["measured"] / 100)
    assert run.data.params["budget"] == "smoke" and run.info.status == "FINISHED"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"smd-table_mnist.md", "smd-table_mnist.csv", "smd-table_mnist.json", "smd-table_mnist.png"}


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["smd-table", "--methods", "naive,bogus"], "unknown method(s) ['bogus']"),
        (["smd-table", "--dataset", "cifar100"], "has the paper's numbers for mnist, fashion_mnist, cifar10"),
        (["smd-table", "--seeds", "0"], "seeds=0 is not valid"),
        (["smd-table", "--epochs-for", "dverge=x"], "--epochs-for expects METHOD=N"),
        (["smd-table", "--out", "FILE"], "is a file"),
        (["smd-table", "--data-dir", "/no/such/folder"], "does not exist"),
        (["smd-fable"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNE_DIV_CACHE", str(tmp_path / "cache"))
    (tmp_path / "FILE").write_text("keep")
    with pytest.raises(SystemExit) as exc:
        reproduce_cli.main(argv + ["--budget", "smoke"] if argv[0] == "smd-table" else argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"] and (tmp_path / "FILE").read_text() == "keep"


def test_a_diverging_method_is_left_out_with_its_reason_and_the_table_goes_on(real_data, tmp_path, monkeypatch, capsys):
    from tune_div.defenses.smd import SMD

    monkeypatch.setenv("TUNE_DIV_CACHE", str(tmp_path / "cache"))
    real_loss = SMD.loss
    monkeypatch.setattr(
        SMD, "loss", lambda self, ens, x, y: (lambda t, p: (t * float("nan"), p))(*real_loss(self, ens, x, y))
    )
    assert (
        reproduce_cli.main(
            [
                "smd-table",
                "--budget",
                "smoke",
                "--methods",
                "naive,smd,adp",
                "--n",
                "20",
                "--audit",
                "off",
                "--data-dir",
                str(real_data),
                "--out",
                str(tmp_path / "out"),
                "--no-mlflow",
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "out" / "smd-table_mnist.json").read_text())
    assert doc["settings"]["methods"] == ["naive", "adp"] and "smd" not in doc["runs"]
    assert "became nan" in doc["diverged"]["smd"]
    assert (
        "SMD diverged and is left out: seed 0: loss of defense 'smd' became nan"
        in (tmp_path / "out" / "smd-table_mnist.md").read_text()
    )
    assert "| SMD |" not in capsys.readouterr().out
    assert "NOT AUDITED" in (tmp_path / "out" / "smd-table_mnist.md").read_text()


def test_an_evaluation_cached_before_or_after_split_seed_existed_is_found(tmp_path, monkeypatch):
    """An evaluation cached before the surrogate's config gained ``split_seed`` (or ``precision``) is
    found under the key it had then; the newest file wins. A field added later at its default
    (``monitor: nll``) is not in the key at all."""
    import hashlib
    from dataclasses import replace

    from tune_div.eval import EvalSpec
    from tune_div.reproduce import base
    from tune_div.train import TrainConfig

    cfg = TrainConfig(defense="naive", dataset="mnist", arch="lenet5", n_members=3, epochs=1, seed=0)
    full = {**cfg.to_dict(), "seed": 1000}
    full.pop("data_dir")
    sur = {k: v for k, v in full.items() if k != "monitor"}  # as every surrogate dict was before monitor
    assert sur["split_seed"] is None and full["monitor"] == "nll"
    spec = EvalSpec(dataset="mnist", attacks=["pgd"], eps=[0.1], n=20, surrogate_config=full)
    assert base.eval_keys(spec) == base.eval_keys(replace(spec, surrogate_config=sur))
    versions = EvalSpec(
        dataset="mnist",
        attacks=["pgd"],
        eps=[0.1],
        n=20,
        black_box=True,
        surrogate_config=full,
        version_surrogates=[full],
    )
    assert base.eval_keys(versions) == base.eval_keys(replace(versions, surrogate_config=sur, version_surrogates=[sur]))
    assert base.eval_keys(replace(spec, surrogate_config={**full, "monitor": "loss"})) != base.eval_keys(spec)

    def key_of(surrogate: dict) -> str:
        # the worst-of-versions fields, unused here, must not change the key either
        doc = {k: v for k, v in vars(spec).items() if k not in ("data_dir", "version_surrogates", "version_losses")}
        doc["surrogate_config"] = surrogate
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]

    now = key_of(sur)
    before_split_seed = key_of({k: v for k, v in sur.items() if k != "split_seed"})
    before_precision = key_of({k: v for k, v in sur.items() if k not in ("split_seed", "precision")})
    assert base.eval_keys(spec) == (now, before_split_seed, before_precision)
    assert len(set(base.eval_keys(spec))) == 3

    def no_evaluation(*a, **k):
        raise AssertionError("the cached evaluation was not found")

    monkeypatch.setattr(base, "evaluate", no_evaluation)
    folder = tmp_path / base.config_key(cfg)
    folder.mkdir()
    for name, value in ((before_precision, 0.125), (before_split_seed, 0.25), (now, 0.5)):
        (folder / f"eval_{name}.json").write_text(json.dumps({"clean_acc": value}))
        got, hit = base.evaluate_cached(None, cfg, spec, log=print, root=tmp_path)
        assert hit and got == {"clean_acc": value}


def test_an_attack_whose_defaults_changed_is_never_read_from_a_result_of_its_old_defaults(tmp_path, monkeypatch):
    """``cw_l2``'s defaults changed (defaults_version 1): an evaluation or crafted examples cached under
    the old defaults have the old key, so they are not read; attacks whose defaults never changed keep
    their keys."""
    import hashlib

    import torch

    from tune_div.attacks.cw import CWL2
    from tune_div.eval import EvalSpec, Surrogate
    from tune_div.reproduce import base
    from tune_div.train import TrainConfig

    def key_of(spec: EvalSpec, extra: dict) -> str:
        doc = {k: v for k, v in vars(spec).items() if k not in ("data_dir", "version_surrogates", "version_losses")}
        return hashlib.sha256(json.dumps({**doc, **extra}, sort_keys=True, default=str).encode()).hexdigest()[:16]

    cw = EvalSpec(dataset="mnist", attacks=["pgd", "cw_l2"], eps=[0.1], n=20)
    pgd = EvalSpec(dataset="mnist", attacks=["pgd"], eps=[0.1], n=20)
    assert CWL2.defaults_version == 1
    assert base.eval_keys(cw) == (key_of(cw, {"attack_defaults": {"cw_l2": 1}}),)
    assert base.eval_keys(pgd) == (key_of(pgd, {}),)  # unchanged: results cached before still count
    monkeypatch.setattr(CWL2, "defaults_version", 0)
    assert base.eval_keys(cw) == (key_of(cw, {}),)  # the key the old defaults' results were stored under
    monkeypatch.undo()

    sur = Surrogate(TrainConfig(defense="naive", epochs=1), tmp_path)
    x, y = torch.zeros(2, 1, 28, 28), torch.tensor([0, 1])
    old = hashlib.sha256(json.dumps(["cw_l2", 3.0, {}, "k"], sort_keys=True).encode()).hexdigest()[:16]
    stale = sur.folder / "adv" / f"cw_l2_{old}.pt"
    stale.parent.mkdir(parents=True)
    torch.save({"x_adv": torch.ones_like(x), "y": y}, stale)
    crafted = []
    monkeypatch.setattr("tune_div.eval.surrogate.craft", lambda *a, **k: crafted.append(a[0]) or a[2].clone())
    monkeypatch.setattr(Surrogate, "model", lambda self, log=None: None)
    x_adv, from_cache = sur.adversarial("cw_l2", 3.0, {}, "k", x, y)
    assert not from_cache and crafted == ["cw_l2"] and torch.equal(x_adv, x)  # crafted anew, not the stale file
    x_pgd = torch.full_like(x, 0.5)
    old_pgd = hashlib.sha256(json.dumps(["pgd", 0.1, {}, "k"], sort_keys=True).encode()).hexdigest()[:16]
    torch.save({"x_adv": x_pgd, "y": y}, sur.folder / "adv" / f"pgd_{old_pgd}.pt")
    got, from_cache = sur.adversarial("pgd", 0.1, {}, "k", x, y)
    assert from_cache and torch.equal(got, x_pgd)  # an attack with unchanged defaults reads its old file


def test_the_audits_cached_results_are_keyed_on_its_components_defaults(tmp_path, monkeypatch):
    """The budget-check's cached audits and the search's cached naive baseline hold audited numbers: a
    change of an audit component's defaults (its defaults_version) must give them a new key, and while
    every version is 0 their keys are the ones results were first stored under."""
    import hashlib
    from dataclasses import replace

    from tune_div import attacks
    from tune_div.attacks.autopgd import APGDCE
    from tune_div.reproduce.budget_check import BudgetCheck
    from tune_div.search import baseline
    from tune_div.search.trial_config import Blackbox, TrialConfig
    from tune_div.train import TrainConfig

    def digest(doc) -> str:
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]

    monkeypatch.setenv("TUNE_DIV_CACHE", str(tmp_path))
    cfg = TrainConfig(defense="naive", epochs=1)
    s = {"n": 60, "eps": 0.1, "audit": "fast"}
    trial = TrialConfig.from_dict(
        {
            "defense": "naive",
            "base": {"dataset": "mnist", "epochs": 1, "data_dir": "/somewhere"},
            "objective": {"attack": "pgd_cw_logits", "eps": 0.1, "steps": 10, "n": 50, "seed": 0, "audit": "fast"},
            "sanity_n": 0,
            "test_n": 100,
            "rungs": [1],
            "inject_nan_if": None,
        }
    )
    first_doc = trial.to_dict()
    first_doc["base"].pop("data_dir")
    audit_first = BudgetCheck().audit_file(cfg, s)
    assert audit_first.name == f"audit_{digest({**s, 'seed': 0})}.json"
    assert baseline.cache_path(trial).name == f"{digest(first_doc)}.json"
    assert attacks.defaults_versions(["audit"]) == {}

    monkeypatch.setattr(APGDCE, "defaults_version", 2)
    assert attacks.defaults_versions(["audit"]) == {"apgd_ce": 2}  # "audit" stands for its components
    assert attacks.defaults_versions(["pgd"]) == {}
    assert (
        BudgetCheck().audit_file(cfg, s).name
        == f"audit_{digest({**s, 'seed': 0, 'attack_defaults': {'apgd_ce': 2}})}.json"
    )
    assert baseline.cache_path(trial).name == f"{digest({**first_doc, 'attack_defaults': {'apgd_ce': 2}})}.json"
    unaudited = trial.replace(objective=replace(trial.objective, audit=None))
    doc = unaudited.to_dict()
    doc["base"].pop("data_dir")
    # not audited: the audit's defaults do not matter
    assert baseline.cache_path(unaudited).name == f"{digest(doc)}.json"
    # a search's black-box surrogate: its whole TrainConfig dict is in the key, less fields added at default
    sur = {k: v for k, v in TrainConfig(defense="naive", epochs=1, seed=1000).to_dict().items() if k != "monitor"}
    boxed = unaudited.replace(blackbox=Blackbox(config={**sur, "monitor": "nll"}, root="/r"))
    assert baseline.cache_path(boxed) == baseline.cache_path(
        unaudited.replace(blackbox=Blackbox(config=sur, root="/r"))
    )
