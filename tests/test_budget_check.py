"""``tune-div reproduce budget-check``: the paired lift of a defense over naive at two budgets, per seed
and pooled, and the verdict that says whether the cheap budget ranks them as the other does."""

from __future__ import annotations

import json

import pytest
from scipy.stats import binom

from tune_div.cli import reproduce as reproduce_cli
from tune_div.eval.intervals import points_mask
from tune_div.files import cache_root
from tune_div.search.confirm import verdict


def test_the_verdict_needs_a_pooled_p_below_005_and_one_sign_on_every_seed():
    assert verdict([0.02, 0.05], 0.01) == "better" and verdict([-0.02, -0.05], 0.01) == "worse"
    assert verdict([0.10, -0.01], 0.001) == "not told apart"  # the sign changes with the seed
    assert verdict([0.02, 0.05], 0.2) == "not told apart" and verdict([], None) == "not told apart"


def test_a_budget_is_a_search_budget_or_epochs_and_images():
    from tune_div.reproduce.budget_check import budget_size

    assert budget_size("small", 50) == (5, 10000) and budget_size("paper", 50) == (50, None)
    assert budget_size("10:all", 50) == (10, None) and budget_size("20:10000", 50) == (20, 10000)
    assert budget_size("10", 50) is None and budget_size("x:all", 50) is None and budget_size("5:many", 50) is None


def test_a_smoke_budget_check_pairs_each_seed_and_pools_them(real_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNE_DIV_CACHE", str(tmp_path / "cache"))
    argv = ["budget-check", "--budgets", "1:1000", "--seeds", "2", "--n", "60", "--hparam", "lam=2"]
    argv += ["--data-dir", str(real_data), "--out", str(tmp_path / "out"), "--no-mlflow"]
    assert reproduce_cli.main(argv) == 0
    doc = json.loads((tmp_path / "out" / "budget-check_mnist.json").read_text())
    assert doc["settings"]["hparams"] == {"lam": 2} and doc["settings"]["n"] == 60
    (smoke,) = doc["budgets"].values()
    masks = {}  # the cached per-point audits, read back here to count the 2x2 tables by hand
    for f in cache_root().glob("reproduce/*/audit_*.json"):
        cfg = json.loads((f.parent / "config.json").read_text())
        masks[(cfg["defense"], cfg["seed"])] = points_mask(json.loads(f.read_text())["points"])
    b = c = 0
    for x in smoke["seeds"]:
        a, n = masks[("smd", x["seed"])], masks[("naive", x["seed"])]
        assert x["robust"] == pytest.approx(sum(a) / 60) and x["naive_robust"] == pytest.approx(sum(n) / 60)
        only_a, only_n = sum(u and not v for u, v in zip(a, n)), sum(v and not u for u, v in zip(a, n))
        assert x["lift"] == pytest.approx((only_a - only_n) / 60)
        b, c = b + only_a, c + only_n
    m = b + c
    pooled = min(1.0, 2 * binom.cdf(min(b, c), m, 0.5)) if m else 1.0
    assert smoke["lift_p"] == pytest.approx(pooled)
    lifts = [x["lift"] for x in smoke["seeds"]]
    assert smoke["lift"] == pytest.approx(sum(lifts) / 2) and smoke["verdict"] == verdict(lifts, smoke["lift_p"])
    md = (tmp_path / "out" / "budget-check_mnist.md").read_text()
    assert "| **1:1000** |" in md and ("budgets **agree**" in md) and "lam=2" in md
    assert (tmp_path / "out" / "budget-check_mnist.png").stat().st_size > 0
    # a rerun trains and audits nothing again
    capsys.readouterr()
    assert reproduce_cli.main(argv) == 0
    assert " epoch 1/" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--budgets", "tiny"], "unknown budget(s) ['tiny']"),
        (["--budgets", "small,0:all"], "unknown budget(s) ['0:all']"),
        (["--hparam", "nope=1"], "nope"),
        (["--seeds", "0"], "seeds=0 is not valid"),
    ],
)
def test_bad_input_is_one_line_exit_2(extra, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNE_DIV_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as exc:
        reproduce_cli.main(["budget-check", *extra, "--no-mlflow"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
