"""Seed confirmation (search/confirm.py): which members, which seeds and data, the numbers over seeds, the
pooled paired test, the re-chosen knee, and a retrain that is never run twice. The real-Ray search with
``--confirm`` is in test_search.py (the smoke fixture) and test_cluster.py (killed and resumed)."""

from __future__ import annotations

import json
import statistics

import pytest
from scipy.stats import binom

from tune_div.eval.intervals import points_text
from tune_div.search import confirm, pareto
from tune_div.search.trial_config import Objective, TrialConfig
from tune_div.train import TrainConfig, Trainer, config_file


def trial(seed=0, **base):
    return TrialConfig(
        defense="smd",
        base={"dataset": "mnist", "arch": "lenet5", "n_members": 2, "epochs": 1, "seed": seed, **base},
        objective=Objective("pgd_cw_logits", 0.1, 2, 40, seed, None),
        sanity_n=0,
        test_n=40,
        rungs=(),
        hparams={"lam": 1.0},
    )


def test_fresh_seeds_follow_the_search_seed_and_keep_its_data():
    assert confirm.seeds(0, 2) == [1, 2] and confirm.seeds(7, 3) == [8, 9, 10] and confirm.seeds(3, 0) == []
    cfg = confirm.seed_config(trial(seed=5), 6)
    assert cfg.base["seed"] == 6 and cfg.base["split_seed"] == 5 and cfg.test_report
    assert cfg.train_config().data_seed == 5 and cfg.train_config().seed == 6
    again = confirm.seed_config(cfg, 7)  # the data stay the search's, however often it is reseeded
    assert again.base["split_seed"] == 5 and cfg.hparams == again.hparams == {"lam": 1.0}


def test_a_fresh_seed_trains_on_the_same_images_and_is_measured_on_the_same_points(real_data):
    def loaders(**kw):
        t = Trainer(TrainConfig(defense="naive", data_dir=str(real_data), subset=300, val_subset=100, epochs=1, **kw))
        return t.train_loader.labels, t.val_loader.labels, t.ensemble.state_dict()

    train0, val0, w0 = loaders(seed=0)
    train1, val1, w1 = loaders(seed=1, split_seed=0)
    other_train, other_val, _ = loaders(seed=1)  # without split_seed the data move with the seed
    assert train0.tolist() == train1.tolist() and val0.tolist() == val1.tolist()
    assert other_val.tolist() != val0.tolist() or other_train.tolist() != train0.tolist()
    assert any(not (w0[k] == w1[k]).all() for k in w0)  # only the training randomness changed


def test_retraining_an_exported_config_with_another_seed_keeps_its_data():
    doc = {"defense": "naive", "dataset": "mnist", "train": {"seed": 3, "epochs": 1}}
    assert config_file.to_train_config(doc, seed=4).data_seed == 3
    assert config_file.to_train_config(doc).data_seed == 3
    assert config_file.to_train_config(doc, seed=3).split_seed is None
    assert config_file.to_train_config(doc, seed=4, split_seed=4).data_seed == 4
    assert config_file.document(config_file.to_train_config(doc, seed=4))["train"]["split_seed"] == 3


def row(tid, clean, robust, knee=False):
    return {"trial_id": tid, "val_clean_acc": clean, "val_robust_acc": robust, "knee": knee, "config": trial()}


def test_members_are_the_knee_then_the_best_robust_then_by_robust():
    front = [row("a", 0.99, 0.40), row("b", 0.97, 0.55, knee=True), row("c", 0.90, 0.70), row("d", 0.95, 0.60)]
    table = {"front": front}
    objectives = ("val_clean_acc", "val_robust_acc")
    assert [r["trial_id"] for r in confirm.members(table, 0, objectives)] == ["b", "c", "d", "a"]
    assert [r["trial_id"] for r in confirm.members(table, 2, objectives)] == ["b", "c"]
    assert [r["trial_id"] for r in confirm.members(table, 9, objectives)] == ["b", "c", "d", "a"]
    front[1]["config"] = None  # a member without a config (no checkpoint) cannot be retrained
    assert [r["trial_id"] for r in confirm.members(table, 2, objectives)] == ["c", "d"]


def mcnemar_p(b, c):
    """Two-sided exact McNemar from the binomial distribution, computed here independently."""
    m = b + c
    return min(1.0, 2 * binom.cdf(min(b, c), m, 0.5))


def test_lift_over_seeds_pools_the_discordant_pairs_of_every_seed():
    # seed 0: member right where naive is wrong on 6 points, the reverse on 1; seed 1: 4 against 2
    m0 = [True] * 6 + [False] + [True] * 13
    n0 = [False] * 6 + [True] + [True] * 13
    m1 = [True] * 4 + [False] * 2 + [False] * 14
    n1 = [False] * 4 + [True] * 2 + [False] * 14
    lifts, p = confirm.lift_over_seeds([points_text(m0), points_text(m1)], [points_text(n0), points_text(n1)])
    assert lifts == pytest.approx([(6 - 1) / 20, (4 - 2) / 20])
    assert p == pytest.approx(mcnemar_p(10, 3))
    # a seed without masks (or over other points) is left out, not guessed
    lifts, p = confirm.lift_over_seeds([points_text(m0), None], [points_text(n0), points_text(n1)])
    assert lifts == pytest.approx([0.25]) and p == pytest.approx(mcnemar_p(6, 1))
    assert confirm.lift_over_seeds([None], [None]) == ([], None)


def result(val, test, points):
    return {
        "val_clean_acc": 0.9,
        "val_robust_acc": val,
        "test_clean_acc": 0.91,
        "test_robust_acc": test,
        "test_robust_points": points_text(points),
    }


def test_summarize_gives_means_stds_and_the_confirmed_lift():
    n = 200
    seeds = ((0, 0.7, 0.68, 150), (1, 0.6, 0.62, 140), (2, 0.5, 0.55, 130))
    member = {s: result(v, t, [i < k for i in range(n)]) for s, v, t, k in seeds}
    naive = {s: result(0.4, 0.40, [i < 80 for i in range(n)]) for s in (0, 1, 2)}
    r: dict = {}
    confirm.summarize(r, member, naive)
    assert r["confirm_seeds"] == [0, 1, 2]
    assert r["confirmed_val_robust_acc"] == pytest.approx(0.6)
    assert r["confirmed_val_robust_acc_std"] == pytest.approx(statistics.stdev([0.7, 0.6, 0.5]))
    assert r["confirmed_test_robust_acc_values"] == [0.68, 0.62, 0.55]
    assert r["confirmed_lift_values"] == pytest.approx([70 / n, 60 / n, 50 / n])
    assert r["confirmed_lift"] == pytest.approx(0.3) and r["confirmed_lift_std"] == pytest.approx(0.05)
    assert r["confirmed_lift_p"] == pytest.approx(mcnemar_p(180, 0)) and r["confirmed_lift_significant"]
    assert r["confirmed_lift_verdict"] == "better"
    # a lift that changes sign on one seed is not confirmed, however strong the others
    member[2] = result(0.5, 0.38, [i < 76 for i in range(n)])
    confirm.summarize(r, member, naive)
    assert r["confirmed_lift"] > 0 and r["confirmed_lift_p"] < 0.05 and not r["confirmed_lift_significant"]
    assert r["confirmed_lift_verdict"] == "not told apart"
    # below naive on every seed: worse, and said so
    low = {s: result(0.3, 0.3, [i < 40 for i in range(n)]) for s in (0, 1, 2)}
    confirm.summarize(r, low, naive)
    assert r["confirmed_lift_verdict"] == "worse" and r["confirmed_lift"] == pytest.approx(-0.2)
    # one seed alone: a std of 0, and the lift of that seed
    confirm.summarize(r, {0: member[0]}, naive)
    assert r["confirmed_val_robust_acc_std"] == 0 and r["confirmed_lift_values"] == pytest.approx([0.35])


def test_the_knee_and_best_are_chosen_again_on_the_confirmed_means():
    rows = [row("a", 0.99, 0.40), row("b", 0.97, 0.60), row("c", 0.90, 0.70), row("x", 0.5, 0.9)]
    means = {"a": (0.99, 0.41), "b": (0.97, 0.45), "c": (0.90, 0.50)}  # b's robust was a lucky seed
    for r in rows:
        if r["trial_id"] in means:
            r["confirmed_val_clean_acc"], r["confirmed_val_robust_acc"] = means[r["trial_id"]]
    knee, best = pareto.confirmed_choice(rows)
    pts = list(means.values())
    assert knee["trial_id"] == "abc"[pareto.knee(pts)] and best["trial_id"] == "c"  # "x" is not confirmed
    assert pareto.confirmed_choice([row("a", 0.9, 0.5)]) is None


def test_a_retrain_resumes_from_its_checkpoint_and_a_finished_one_is_never_run_again(real_data, tmp_path, monkeypatch):
    from tune_div.search import trainable

    cfg = confirm.seed_config(trial(subset=400, val_subset=100, data_dir=str(real_data), epochs=2), 1)
    folder = tmp_path / "seed_1"
    calls = []
    real = trainable.run_trial

    def counted(config, report, checkpoint_dir=None):
        calls.append(checkpoint_dir)
        return real(config, report, checkpoint_dir)

    monkeypatch.setattr(trainable, "run_trial", counted)
    out = confirm.retrain(cfg, str(folder))
    assert out["epoch"] == 2 and 0 <= out["test_robust_acc"] <= 1 and out["test_robust_acc_n"] == 40
    assert len(out["test_robust_points"]) == 40 and out["val_robust_acc_n"] == 40 and out["time_s"] > 0
    assert json.loads((folder / confirm.RESULT_FILE).read_text()) == json.loads(json.dumps(out))
    assert not (folder / trainable.CHECKPOINT_FILE).exists()  # measured: the weights are gone
    stamp = (folder / confirm.RESULT_FILE).stat().st_mtime_ns
    assert confirm.retrain(cfg, str(folder)) == json.loads(json.dumps(out)) and len(calls) == 1
    assert (folder / confirm.RESULT_FILE).stat().st_mtime_ns == stamp

    # cut short after epoch 1: the next call continues from that epoch's checkpoint
    cut = tmp_path / "cut"

    def stop_after_one(config, report, checkpoint_dir=None):
        def once(metrics, trainer):
            report(metrics, trainer)
            raise KeyboardInterrupt

        return real(config, once, checkpoint_dir)

    monkeypatch.setattr(trainable, "run_trial", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        confirm.retrain(cfg, str(cut))
    assert json.loads((cut / trainable.METRICS_FILE).read_text())["epoch"] == 1
    monkeypatch.setattr(trainable, "run_trial", counted)
    resumed = confirm.retrain(cfg, str(cut))
    assert calls[-1] == str(cut) and resumed["test_robust_acc"] == out["test_robust_acc"]  # same model, resumed


def test_the_noise_summary_of_a_confirmed_search():
    import numpy as np

    def member(tid, search, values, test, lifts, p=0.2, lift=0.01, sig=False):
        return {
            "trial_id": tid,
            "val_robust_acc": search,
            "confirmed_val_robust_acc": statistics.fmean(values),
            "confirmed_val_robust_acc_std": statistics.stdev(values),
            "confirmed_val_robust_acc_values": values,
            "confirmed_test_robust_acc_values": test,
            "confirmed_lift_values": lifts,
            "confirmed_lift_significant": sig,
            "audit_lift_p": p,
            "audit_lift_over_naive": lift,
        }

    confirmed = [
        member("a", 0.80, [0.80, 0.60, 0.50], [0.78, 0.62, 0.52], [0.02, -0.1, -0.2], p=0.01, lift=0.05),
        member("b", 0.75, [0.75, 0.70, 0.68], [0.74, 0.71, 0.69], [0.05, 0.04, 0.03], sig=True),
        member("c", 0.70, [0.70, 0.72, 0.73], [0.70, 0.73, 0.70], [0.01, 0.02, 0.00]),
    ]
    doc = {
        "objectives": ["val_clean_acc", "val_robust_acc"],
        "settings": {"seed": 0},
        "front": [{"val_robust_acc": 0.8}, {"val_robust_acc": 0.75}, {"val_robust_acc": 0.62}],
        "confirmation": {"seeds": [1, 2], "knee": "b", "search_knee": "a", "compute_s": 10, "search_compute_s": 20},
        "confirmed": confirmed,
    }
    n = confirm.noise_summary(doc)
    assert n["seeds"] == [0, 1, 2] and n["front_spread"] == pytest.approx(0.18)
    assert n["seed_std"]["a"] == pytest.approx(np.std([0.8, 0.6, 0.5], ddof=1))
    assert n["significant_before"] == 1 and n["significant_after"] == 1 and n["knee_changed"]
    # the search ranks a > b > c, the confirmed means c > b > a: Spearman from the ranks, here
    means = [statistics.fmean(r["confirmed_val_robust_acc_values"]) for r in confirmed]
    r1, r2 = np.argsort(np.argsort([0.80, 0.75, 0.70])), np.argsort(np.argsort(means))
    assert n["rank_correlation"] == pytest.approx(np.corrcoef(r1, r2)[0, 1])

    def ratio(a, b):
        return np.var(np.subtract(a, b), ddof=1) / (np.var(a, ddof=1) + np.var(b, ddof=1))

    vals = [r["confirmed_val_robust_acc_values"] for r in confirmed]
    expected = np.mean([ratio(vals[0], vals[1]), ratio(vals[0], vals[2]), ratio(vals[1], vals[2])])
    assert n["shared_seed_ratio"] == pytest.approx(expected)
    naive = [np.subtract(r["confirmed_test_robust_acc_values"], r["confirmed_lift_values"]) for r in confirmed]
    expected = np.mean([ratio(r["confirmed_test_robust_acc_values"], v) for r, v in zip(confirmed, naive)])
    assert n["naive_pairing_ratio"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="not seed-confirmed"):
        confirm.noise_summary({**doc, "confirmation": None})


def test_the_printed_table_says_what_confirmation_found_and_cost(tmp_path, monkeypatch, capsys):
    from tune_div.search import results, settings

    s = settings.Settings.create("smd", budget="small", storage_path=str(tmp_path), experiment="p")
    r = {
        **row("a", 0.96, 0.70, knee=True),
        "status": "TERMINATED",
        "eligibility": "ok",
        "pareto": True,
        "flags": "",
        "hparams": {"lam": 1.0},
        "train": {},
    }
    r.update(
        confirmed_val_clean_acc=0.95,
        confirmed_val_clean_acc_std=0.01,
        confirmed_val_robust_acc=0.6,
        confirmed_val_robust_acc_std=0.1,
        confirmed_test_robust_acc=0.62,
        confirmed_test_robust_acc_std=0.12,
        confirmed_test_robust_acc_values=[0.75, 0.6, 0.51],
        confirmed_lift=-0.1,
        confirmed_lift_std=0.08,
        confirmed_lift_p=1e-9,
        confirmed_lift_verdict="worse",
    )
    off = {**row("b", 0.95, 0.65), "pareto": False, "confirmed_lift_verdict": "not told apart"}
    table = {
        "objectives": ["val_clean_acc", "val_robust_acc"],
        "front": [r],
        "hypervolume": 0.5,
        "reference": [0, 0],
        "knee": r,
        "confirmed": [r, off],
        "confirmation": {
            "seeds": [1, 2],
            "members": ["a", "b"],
            "trained": 4,
            "reused": 0,
            "compute_s": 600.0,
            "wall_s": 400.0,
            "search_compute_s": 300.0,
            "failures": [],
            "knee": "a",
            "search_knee": "b",
            "best": "a",
            "search_best": "a",
        },
    }
    monkeypatch.setitem(settings.BUDGET_CHECKS, ("small", "mnist", "smd"), "SMD misranked here (measured)")
    results.print_table(s, [r], table)
    out = capsys.readouterr().out
    assert "1 trials: 1 finished" in out and "; seed confirmation: 2 member(s) x 2 seed(s), 10m00s of compute" in out
    assert "Seed confirmation: 2 member(s) retrained with seeds 1, 2" in out
    confirmation = out.split("Seed confirmation")[1]
    (line,) = [ln for ln in confirmation.splitlines() if ln.startswith("  a ")]
    assert "0.6000±0.100" in line and "-0.1000±0.080" in line and "0.750 0.600 0.510" in line and "<- knee" in line
    assert "(off the search's front)" in next(ln for ln in confirmation.splitlines() if ln.startswith("  b "))
    assert "0 of 2 better than naive, 1 worse" in out
    assert "knee a (was b on the search's seed), best robust a (unchanged)" in out
    assert "2.00x the trials' 5m00s" in out
    assert (
        out.rstrip().splitlines()[-2]
        == "budget check (small budget, reproduce budget-check): SMD misranked here (measured)"
    )
