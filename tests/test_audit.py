"""The audit suite: worst case per point, never weaker than its components, within 0.03 of its
standard preset, and a gradient-masking ensemble caught (proxy high, audit low, flagged, off the front)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tune_div import attacks, models
from tune_div.attacks.audit import COMPONENTS, component_options
from tune_div.attacks.base import correct
from tune_div.cli import evaluate as evaluate_cli
from tune_div.errors import UserError
from tune_div.eval import accuracy, audit, eval_subset
from tune_div.search import pareto
from tune_div.search.settings import OBJECTIVE_DEFAULTS
from tune_div.search.trainable import SubsetAttack, epoch_metrics
from tune_div.train import TrainConfig

pytestmark = pytest.mark.usefixtures("real_data")
EPS = 0.1


def test_audit_is_the_worst_case_per_point_of_its_components(trained_ensemble, eval_points):
    x, y = eval_points[0][:100], eval_points[1][:100]
    report = attacks.get("audit").report(trained_ensemble, x, y, EPS, preset="fast")
    assert list(report.per_attack) == list(COMPONENTS)
    assert report.robust.tolist() == [b is None for b in report.broken_by]
    still = correct(trained_ensemble, report.x_adv, y)
    for i, by in enumerate(report.broken_by):
        if by is None:  # robust: no component fooled it, and its input is returned unchanged
            assert bool(still[i]) and torch.equal(report.x_adv[i], x[i])
        else:  # broken: the returned example fools the ensemble, inside the ball
            assert not bool(still[i]) and float((report.x_adv[i] - x[i]).abs().max()) <= EPS + 1e-6
    cumulative = list(report.per_attack.values())
    assert all(b <= a for a, b in zip(cumulative, cumulative[1:])) and cumulative[-1] == report.robust_acc
    # Never weaker than any component run alone on the same points (the cascade runs later components on
    # fewer points, with other random starts: two points of slack on 100).
    for name, opts in component_options(report.options).items():
        torch.manual_seed(0)
        alone = accuracy(trained_ensemble, attacks.run(name, trained_ensemble, x, y, EPS, **opts), y)
        assert report.robust_acc <= alone + 0.02, (name, alone, report.robust_acc)
    assert report.robust_acc < accuracy(trained_ensemble, x, y)


def test_presets_are_fixed_and_changes_are_said(trained_ensemble, eval_points):
    x, y = eval_points[0][:8], eval_points[1][:8]
    with pytest.raises(UserError, match="preset='quick' is not valid; expected one of fast, standard"):
        attacks.get("audit").options(EPS, preset="quick")
    with pytest.warns(UserWarning, match=r"changed settings \['square_queries'\].*docs/audit.md"):
        report = attacks.get("audit").report(trained_ensemble, x, y, EPS, preset="fast", square_queries=10)
    assert report.options["changed"] == ["square_queries"]


class Quantised(nn.Module):
    """A member that sees its input rounded to 32 grey levels: the same predictions, and no gradient
    at all through the rounding (no straight-through estimator). Gradient attacks stall; Square does not."""

    def __init__(self, member: nn.Module):
        super().__init__()
        self.member = member

    def forward(self, x):
        return self.member(torch.round(x * 31) / 31)


def test_masked_ensemble_proxy_high_audit_low_flagged_and_off_the_front(trained_ensemble, real_data):
    masked = models.Ensemble([Quantised(m) for m in trained_ensemble.members], trained_ensemble.config).eval()
    cfg = TrainConfig(dataset="mnist", data_dir=str(real_data))
    spec = {**OBJECTIVE_DEFAULTS, "eps": EPS, "n": 200, "test_n": 200, "audit": "fast"}
    objective = SubsetAttack(cfg, spec)
    got = epoch_metrics(masked, spec, objective, None, sanity_n=0, final=True)
    assert got["val_proxy_acc"] > got["val_audit_acc"] + 0.05, got  # the proxy is fooled, the audit is not
    assert got["val_robust_acc"] == got["val_audit_acc"]  # what the searcher is told
    assert "proxy_inflated" in got["flags"].split(",")
    normal = epoch_metrics(trained_ensemble, spec, objective, None, sanity_n=0, final=True)
    gap = lambda m: m["val_proxy_acc"] - m["val_audit_acc"]  # noqa: E731
    assert gap(got) > gap(normal) + 0.1  # the same network unmasked: the proxy tracks the audit far better
    # Off the front because of the flag alone: the same numbers unflagged would be its only member.
    row = {"trial_id": "masked", "status": "TERMINATED", "val_clean_acc": got["proxy_clean_acc"], **got}
    assert pareto.pareto_table([row])["front"] == [] and row["eligibility"] == "flagged"
    assert [r["trial_id"] for r in pareto.pareto_table([{**row, "flags": ""}])["front"]] == ["masked"]


def test_evaluate_audit_is_within_0_03_of_the_standard_preset(trained_ensemble, real_data, tmp_path, capsys):
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
                str(EPS),
                "--n",
                "100",
                "--audit",
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
    fast = r["audit"]["robust_acc"][str(EPS)]
    assert r["audit"]["preset"] == "fast" and list(r["audit"]["per_attack"][str(EPS)]) == list(COMPONENTS)
    x, y = eval_subset("mnist", "test", 100, seed=0, root=str(real_data))
    torch.manual_seed(1)
    standard = audit(trained_ensemble, x, y, EPS, "standard").robust_acc
    assert fast <= standard + 0.03, (fast, standard)
    assert r["threat_models"]["white_box"]["pgd"][str(EPS)] >= standard - 0.02  # PGD-10 is no stronger
    printed = capsys.readouterr().out
    assert f"audit (fast) eps={EPS}: {fast:.4f}" in printed
