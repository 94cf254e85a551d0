"""Does a cheap budget rank a defense against the naive baseline as the paper budget does?

``tune-div reproduce budget-check --defense smd --hparam lam=1.512 --seeds 2 [--budgets small,paper]``

For each search budget (``search/settings.py`` ``BUDGETS``: ``small`` trains 5 epochs on 10,000 images,
``paper`` the dataset's paper epochs on the whole training split) and each seed, the defense at the given
hyperparameters and the naive ensemble are trained (cached and resumable, ``reproduce/base.py``), then
audited on the same ``n`` test points at the dataset's objective ε. Per seed, the defense's lift over
naive is paired on those points (exact McNemar, ``eval/intervals.py``); over the seeds, the mean ± std of
the lifts and the exact McNemar p pooled over every (seed, point) pair (``search/confirm.py``). A budget's
verdict: ``better`` or ``worse`` than naive when the pooled p < 0.05 and every seed's lift has that
sign, else ``not told apart``. The budgets agree when their verdicts are the same. A budget is a search
budget's name or ``EPOCHS:IMAGES`` (``10:all``, ``20:10000``), to look for a cheap one that agrees.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

from .. import attacks, data, defenses
from ..errors import UserError
from ..eval import accuracy, audit, eval_subset
from ..eval.intervals import paired_lift, points_mask, points_text
from ..eval.surrogate import config_key
from ..files import atomic_write_text
from ..search.confirm import lift_over_seeds, verdict
from ..search.settings import BUDGETS as SEARCH_BUDGETS
from ..train import TrainConfig
from .base import Log, Protocol, mean_std, register_protocol, reproduce_cache, train_cached

BUDGETS = ("smoke", "small", "paper")


def budget_size(name: str, paper_epochs: int) -> tuple[int, int | None] | None:
    """(epochs, training images or None for all) of a search budget's name or of ``EPOCHS:IMAGES``."""
    if name in BUDGETS:
        b = SEARCH_BUDGETS[name]
        return b["epochs"] or paper_epochs, b["subset"]
    epochs, sep, images = name.partition(":")
    if not sep or not epochs.isdigit() or int(epochs) < 1 or not (images == "all" or images.isdigit()):
        return None
    return int(epochs), None if images == "all" else int(images)


def key_values(items: list[str] | None) -> dict[str, Any]:
    """``--hparam KEY=VALUE`` items as a mapping, each value read as YAML (``1.5`` a number)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--hparam expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value.strip())
    return out


@register_protocol("budget-check")
class BudgetCheck(Protocol):
    name = "budget-check"
    summary = "whether a search budget ranks a defense against the naive baseline as the paper budget does"

    @classmethod
    def add_arguments(cls, p) -> None:
        p.add_argument("--defense", default="smd", help=f"one of: {', '.join(defenses.names())}")
        p.add_argument("--hparam", action="append", metavar="KEY=VALUE", help="the defense's hyperparameter")
        p.add_argument("--dataset", default="mnist", help=f"one of: {', '.join(data.names())}")
        p.add_argument(
            "--budgets",
            default="small,paper",
            help=f"comma-separated: {', '.join(BUDGETS)}, or EPOCHS:IMAGES (10:all, 20:10000)",
        )
        p.add_argument("--seeds", type=int, default=2, help="training seeds per budget and model (default 2)")
        p.add_argument("--n", type=int, default=1000, help="test points audited (default 1000)")
        p.add_argument("--audit", default="fast", choices=["fast", "standard"], help="audit preset (docs/audit.md)")

    def settings(self, args) -> dict[str, Any]:
        from ..domains import COUNT, check

        meta = data.info(args.dataset)
        budgets = [b for b in args.budgets.split(",") if b]
        sizes = {b: budget_size(b, meta.epochs) for b in budgets}
        unknown = [b for b, size in sizes.items() if size is None]
        if unknown or not budgets:
            raise UserError(
                f"--budgets: unknown budget(s) {unknown or budgets}; choose from {', '.join(BUDGETS)} "
                "or give EPOCHS:IMAGES (10:all)"
            )
        for key in ("seeds", "n"):
            check(f"--{key}", key, getattr(args, key), COUNT)
        hparams = key_values(args.hparam)
        defenses.build(args.defense, **hparams)  # an unknown defense or hyperparameter: one line, now
        return {
            "dataset": args.dataset,
            "defense": args.defense,
            "hparams": hparams,
            "budgets": budgets,
            "seeds": args.seeds,
            "n": args.n,
            "audit": args.audit,
            "eps": meta.objective_eps,
            "arch": meta.default_arch,
            "epochs": {b: size[0] for b, size in sizes.items() if size},
            "subset": {b: size[1] for b, size in sizes.items() if size},
            "data_dir": args.data_dir,
        }

    def train_config(self, s: dict[str, Any], budget: str, defense: str, seed: int) -> TrainConfig:
        return TrainConfig(
            defense=defense,
            hparams=dict(s["hparams"]) if defense == s["defense"] else {},
            dataset=s["dataset"],
            arch=s["arch"],
            n_members=3,
            epochs=s["epochs"][budget],
            subset=s["subset"][budget],
            seed=seed,
            data_dir=s["data_dir"],
        )

    def audit_file(self, cfg: TrainConfig, s: dict[str, Any]) -> Path:
        """Where the audit of ``cfg``'s model is cached: beside the model, keyed on what the audit ran."""
        key_doc: dict[str, Any] = {"n": s["n"], "eps": s["eps"], "audit": s["audit"], "seed": 0}
        if versions := attacks.defaults_versions(["audit"]):
            key_doc["attack_defaults"] = versions  # absent while every default is the first: old keys hold
        key = hashlib.sha256(json.dumps(key_doc, sort_keys=True).encode()).hexdigest()[:16]
        return reproduce_cache() / config_key(cfg) / f"audit_{key}.json"

    def measure(self, cfg: TrainConfig, s: dict[str, Any], log: Log) -> dict[str, Any]:
        """Clean accuracy and the audit's per-point robustness on the test points (cached beside the model)."""
        ens, history, _ = train_cached(cfg, log)
        path = self.audit_file(cfg, s)
        if path.is_file():
            return json.loads(path.read_text())
        x, y = eval_subset(s["dataset"], "test", s["n"], seed=0, root=s["data_dir"])
        ens = ens.eval()
        robust = audit(ens, x, y, s["eps"], s["audit"]).robust
        out = {
            "clean": accuracy(ens, x, y),
            "robust": float(robust.float().mean()),
            "points": points_text(robust.tolist()),
            "train_s": sum(h.get("epoch_time_s", 0.0) for h in history),
        }
        atomic_write_text(path, json.dumps(out))
        return out

    def run(self, args, out: Path, log: Log) -> dict[str, Any]:
        s = self.settings(args)
        data.load(s["dataset"], "test", s["data_dir"], subset=1)  # a missing dataset: one line, before any work
        started = time.time()
        per_budget: dict[str, Any] = {}
        total, k = len(s["budgets"]) * s["seeds"] * 2, 0
        for budget in s["budgets"]:
            seeds = []
            for seed in range(s["seeds"]):
                got = {}
                for defense in ("naive", s["defense"]):
                    k += 1
                    cfg = self.train_config(s, budget, defense, seed)
                    log(
                        f"{budget}: {defense} seed {seed}, {cfg.epochs} epochs on "
                        f"{cfg.subset or 'all the'} images (model {k} of {total})"
                    )
                    got[defense] = self.measure(cfg, s, log)
                pl = paired_lift(points_mask(got[s["defense"]]["points"]), points_mask(got["naive"]["points"]))
                seeds.append(
                    {
                        "seed": seed,
                        "naive_clean": got["naive"]["clean"],
                        "naive_robust": got["naive"]["robust"],
                        "clean": got[s["defense"]]["clean"],
                        "robust": got[s["defense"]]["robust"],
                        "lift": pl.lift,
                        "lift_ci_low": pl.low,
                        "lift_ci_high": pl.high,
                        "lift_p": pl.p_value,
                        "points": {m: g["points"] for m, g in got.items()},
                        "train_s": {m: g["train_s"] for m, g in got.items()},
                    }
                )
            lifts, p = lift_over_seeds(
                [r["points"][s["defense"]] for r in seeds], [r["points"]["naive"] for r in seeds]
            )
            mean, std = mean_std(lifts)
            per_budget[budget] = {
                "epochs": s["epochs"][budget],
                "subset": s["subset"][budget],
                "seeds": seeds,
                "lift": mean,
                "lift_std": std,
                "lift_p": p,
                "verdict": verdict(lifts, p),
            }
        verdicts = {b: r["verdict"] for b, r in per_budget.items()}
        doc = {
            "protocol": self.name,
            "settings": {
                **{k: v for k, v in s.items() if k != "data_dir"},
                "budget": ",".join(s["budgets"]),
                "epochs": ",".join(f"{b}={e}" for b, e in s["epochs"].items()),
            },
            "budgets": per_budget,
            "agree": len(set(verdicts.values())) == 1,
            "machine": _machine(),
            "seconds": time.time() - started,
            "command": getattr(args, "command_line", ""),
            "rows": rows(s, per_budget),
            "kendall_tau": {},
        }
        write_outputs(doc, out)
        return doc


def rows(s: dict[str, Any], per_budget: dict[str, Any]) -> list[dict[str, Any]]:
    """The flat cells (percent) for the CSV and MLflow: robust accuracy of each model, and the lift."""
    out = []
    for budget, r in per_budget.items():
        for method, key in (("naive", "naive_robust"), (s["defense"], "robust")):
            mean, std = mean_std([100 * x[key] for x in r["seeds"]])
            out.append(_row(budget, method, "audit", mean, std, len(r["seeds"]), s["eps"]))
        out.append(_row(budget, s["defense"], "lift", 100 * r["lift"], 100 * r["lift_std"], len(r["seeds"]), s["eps"]))
    return out


def _row(budget, method, column, measured, std, seeds, eps) -> dict[str, Any]:
    return {
        "threat": budget,
        "eps": eps,
        "method": method,
        "column": column,
        "measured": measured,
        "std": std,
        "seeds": seeds,
        "paper": None,
    }


def _machine() -> str:
    from .base import machine

    return machine()


def markdown(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    hp = " ".join(f"{k}={v}" for k, v in s["hparams"].items()) or "the paper's hyperparameters"
    lines = [
        f"# Budget check: {s['defense']} ({hp}) against naive on {s['dataset']}",
        "",
        f"- audited ({s['audit']} preset) on {s['n']} test points at eps {s['eps']}; 3 x {s['arch']}; "
        f"seeds 0..{s['seeds'] - 1} per budget; the lift is paired on the same points (exact McNemar)",
        f"- machine: {doc['machine']}; {doc['seconds'] / 60:.1f} min; command: `{doc['command']}`",
        "",
        "| budget | epochs | images | seed | naive clean | naive robust | clean | robust | lift [95%] | p |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for budget, r in doc["budgets"].items():
        for x in r["seeds"]:
            lines.append(
                f"| {budget} | {r['epochs']} | {r['subset'] or 'all'} | {x['seed']} | {100 * x['naive_clean']:.1f} | "
                f"{100 * x['naive_robust']:.1f} | {100 * x['clean']:.1f} | {100 * x['robust']:.1f} | "
                f"{100 * x['lift']:+.1f} [{100 * x['lift_ci_low']:+.1f}, {100 * x['lift_ci_high']:+.1f}] | "
                f"{x['lift_p']:.3g} |"
            )
        p = r["lift_p"]
        lines.append(
            f"| **{budget}** | | | all | | | | | **{100 * r['lift']:+.1f} ± {100 * r['lift_std']:.1f}** | "
            f"{'-' if p is None else f'{p:.3g}'} (pooled) |"
        )
    lines += [""]
    for budget, r in doc["budgets"].items():
        lines.append(
            f"- {budget}: {s['defense']} is **{r['verdict']}** than naive"
            if r["verdict"] != "not told apart"
            else f"- {budget}: {s['defense']} and naive are **not told apart**"
        )
    lines.append(
        "- the budgets **agree**"
        if doc["agree"]
        else "- the budgets **disagree**: the cheaper one misranks the defense"
    )
    return "\n".join(lines) + "\n"


def write_outputs(doc: dict[str, Any], out: Path) -> None:
    """``<out>/budget-check_<dataset>.{md,csv,json,png}``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"budget-check_{doc['settings']['dataset']}"
    slim = json.loads(json.dumps(doc))
    for r in slim["budgets"].values():
        for x in r["seeds"]:
            x.pop("points")  # the per-point masks stay in the cache
    atomic_write_text(stem.with_suffix(".json"), json.dumps(slim, indent=2))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["threat", "eps", "method", "column", "measured", "std", "seeds", "paper"])
    writer.writeheader()
    writer.writerows(doc["rows"])
    atomic_write_text(stem.with_suffix(".csv"), buf.getvalue())
    atomic_write_text(stem.with_suffix(".md"), markdown(doc))
    plot(doc, stem.with_suffix(".png"))


def plot(doc: dict[str, Any], path: Path) -> None:
    """Each seed's lift over naive with its paired 95% interval, one column per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, r in enumerate(doc["budgets"].values()):
        for j, x in enumerate(r["seeds"]):
            pos = i + (j - (len(r["seeds"]) - 1) / 2) * 0.12
            ax.errorbar(
                pos,
                100 * x["lift"],
                yerr=[[100 * (x["lift"] - x["lift_ci_low"])], [100 * (x["lift_ci_high"] - x["lift"])]],
                fmt="o",
                color="C0",
                capsize=3,
            )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(doc["budgets"])), [f"{b}\n{r['epochs']} ep" for b, r in doc["budgets"].items()])
    ax.set_ylabel(f"{doc['settings']['defense']} minus naive, robust (points)")
    ax.set_title("paired lift per seed (95%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
