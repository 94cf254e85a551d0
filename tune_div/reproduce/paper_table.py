"""The base of the paper-table protocols (``cldl-table``, ``adp-table``, ...): one class that trains a
paper's methods, measures them with the paper's attacks, the audit and the black-box surrogate, and
writes the measured table next to the paper's.

A protocol file declares facts only: its :class:`Method` columns, its :class:`AttackSet` groups (one
:class:`~tune_div.eval.EvalSpec` each), the paper's numbers, its training routine, the settings the
paper lost (and what we chose), and its :class:`~tune_div.reproduce.claims.Claim` rows. Everything
else (arguments, caching, seeds, aggregation, Kendall's τ, Markdown/CSV/JSON/PNG) lives here.

The result document (``<out>/<protocol>_<dataset>.json``) holds ``rows``: one per threat, attack
(``column``), ε and method, with ``measured`` (mean over seeds, %), ``std``, ``ci_low``/``ci_high``
(the 95% Wilson interval of one seed's proportion; ``None`` with several seeds), ``seeds`` and
``paper`` (``None`` where the paper has no number). The white-box audit is the column ``audit``; the
clean accuracy is threat ``clean``, column ``clean``, ε 0.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from .. import data
from ..attacks import ATTACKS
from ..errors import DivergenceError, UserError
from ..eval import EvalSpec
from ..files import atomic_write_text
from ..train import EVAL_BATCH, TrainConfig, ensemble_and_member_accuracy
from .base import (
    Log,
    Protocol,
    RunRecords,
    add_epochs_for_argument,
    closing_lines,
    epochs_for,
    evaluate_cached,
    interval_note,
    kendall_tau,
    machine,
    mean_std,
    seed_interval,
    train_cached,
)

THREAT_TITLES = {
    "white_box": "white-box attacks on the whole model",
    "black_box": "black-box attacks transferred from a separately trained surrogate",
}
SURROGATE_SEED = 1000
ATTACK_LABELS = {
    "fgsm": "FGSM",
    "rfgsm": "R-FGSM",
    "bim": "BIM",
    "mim": "MIM",
    "pgd": "PGD",
    "pgd_cw": "PGD (CW loss)",
    "apgd_ce": "APGD-CE",
    "apgd_dlr": "APGD-DLR",
    "cw_l2": "C&W-L2",
    "ead": "EAD",
    "jsma": "JSMA",
    "audit": "audit",
    "clean": "clean",
}


Numbers = Mapping[str, Mapping[str, Mapping[str, Mapping[float, Sequence[float | None]]]]]


@dataclass(frozen=True)
class Method:
    """One column of a paper's table: a defense with its hyperparameters and the training settings
    that differ from the protocol's routine (``TrainConfig`` fields, e.g. ``n_members``, ``adv_train``)."""

    key: str
    label: str
    defense: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Versions:
    """Black-box robustness as the worst of several adversarial versions: each attack crafted on naive
    surrogates of each size in ``members`` at ``seeds`` seeds, with each loss of ``losses``; a point counts
    as robust only if the model survives all of them (the CLDL authors' code: 2 sizes x 2 losses x 3 seeds)."""

    members: tuple[int, ...] = (3, 5)
    seeds: int = 3
    losses: tuple[str, ...] = ("ce", "cw")

    @property
    def count(self) -> int:
        return len(self.members) * self.seeds * len(self.losses)


@dataclass(frozen=True)
class AttackSet:
    """Attacks measured at the same ε (one ``EvalSpec``): ``threat`` white_box or black_box; ``options``
    per attack; ``keys`` renames an attack's column (two settings of one attack: ``cw_l2`` at c 0.1
    and at c 10 are ``cw_l2_c0.1`` and ``cw_l2_c10``); ``audit`` adds the audit at each ε (L∞ only)."""

    threat: str
    attacks: tuple[str, ...]
    eps: tuple[float, ...]
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    audit: bool = False
    key: str = ""  # a suffix of the columns: two sets with one attack (C&W at two c) stay apart
    label: str = ""  # shown after the attack's name, e.g. "c 10"
    n: int | None = None  # at most this many of the run's test points (the slow optimisation attacks on CPU)
    versions: Versions | None = None  # black-box only: score the worst of these versions instead of one

    def __post_init__(self):
        if self.versions is not None:
            no_loss = [a for a in self.attacks if "loss" not in ATTACKS.get(a).defaults]
            if self.threat != "black_box" or no_loss or not self.key:
                raise ValueError(f"a worst-of-versions set is black-box, keyed, of attacks with a loss: {no_loss}")

    def column(self, attack: str) -> str:
        return attack + self.key

    def paper_column(self, attack: str) -> str:
        """The column of the paper's numbers this set's column stands beside: a worst-of-versions
        column is another reading of the same attack."""
        return attack if self.versions else self.column(attack)

    def column_label(self, attack: str, versions: Versions | None = None) -> str:
        """The column's heading; a worst-of-versions set names how many versions it took (``versions``:
        the run's, where its budget took fewer than the set's)."""
        versions = versions or self.versions
        label = f"worst of {versions.count} versions" if versions else self.label
        return ATTACK_LABELS.get(attack, attack) + (f" ({label})" if label else "")


@dataclass
class TableSettings:
    """What one run of a paper table measures (the JSON's ``settings``)."""

    dataset: str
    methods: list[str]
    seeds: int
    epochs: int
    paper_epochs: int
    budget: str
    n: int
    subset: int | None
    val_subset: int | None
    audit: str | None
    arch: str | None = None  # every model's architecture instead of the paper's (``--arch``; the table says so)
    slow_n: int | None = None  # the budget's cap on the points of a capped (slow) attack set; 0: not run
    epochs_for: dict[str, int] = field(default_factory=dict)  # a method's epochs instead of ``epochs``
    version_seeds: int | None = None  # the budget's cap on the surrogate seeds of a worst-of-versions set
    data_dir: str | None = None

    def versions(self, group: AttackSet) -> Versions | None:
        """The versions ``group`` runs at this budget."""
        if group.versions is None or self.version_seeds is None:
            return group.versions
        return replace(group.versions, seeds=min(group.versions.seeds, self.version_seeds))

    def points(self, group: AttackSet) -> int:
        """The test points ``group`` runs on: ``n``, or fewer for a capped set."""
        if group.n and self.slow_n == 0:
            return 0
        return min([self.n, *(c for c in (group.n, group.n and self.slow_n) if c)])

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "data_dir"}


# smoke: a minute or two of CPU, for tests and trying the command; full: the protocol's own budget.
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"epochs": 1, "subset": 1000, "val_subset": 200, "n": 40, "slow_n": 0, "version_seeds": 1},
    "full": {"epochs": None, "subset": None, "val_subset": None, "n": 1000, "slow_n": None, "version_seeds": None},
}


class PaperTable(Protocol):
    """A paper's table, measured here. Subclasses set the class facts below; see the module docstring."""

    paper: ClassVar[str] = ""  # the citation
    table: ClassVar[str] = ""  # which of its tables, e.g. "Table 4"
    methods: ClassVar[tuple[Method, ...]] = ()
    # the paper's numbers: dataset -> threat -> column -> ε -> one value per method of ``paper_columns``
    numbers: ClassVar[Numbers] = {}
    paper_columns: ClassVar[tuple[str, ...]] = ()  # the method keys in the order of ``numbers``' tuples
    default_methods: ClassVar[dict[str, tuple[str, ...]]] = {}  # per dataset (else every method)
    paper_epochs: ClassVar[dict[str, int]] = {}  # per dataset, what the paper trains
    default_epochs: ClassVar[dict[str, int]] = {}  # per dataset, what ``--budget full`` trains here
    # per dataset, methods that ``--budget full`` trains for other epochs than ``default_epochs`` (cheap
    # ones that need the paper's long routine), unless ``--epochs`` is given
    default_epochs_for: ClassVar[dict[str, dict[str, int]]] = {}
    # per dataset, the seeded training images ``--budget full`` trains on here (absent: all of them)
    default_subset: ClassVar[dict[str, int]] = {}
    routine: ClassVar[dict[str, Any]] = {}  # TrainConfig fields shared by every method and the surrogate
    surrogate: ClassVar[Method | None] = None  # the black-box source model (None: no black-box sets)
    deviations: ClassVar[tuple[str, ...]] = ()  # each setting the paper lost or we changed, and our choice
    claims: ClassVar[tuple[Any, ...]] = ()  # tune_div.reproduce.claims.Claim

    @classmethod
    def attack_sets(cls, dataset: str) -> tuple[AttackSet, ...]:
        raise NotImplementedError

    @classmethod
    def method(cls, key: str) -> Method:
        return next(m for m in cls.methods if m.key == key)

    @classmethod
    def paper_value(cls, dataset: str, threat: str, column: str, eps: float, method: str) -> float | None:
        per_eps = cls.numbers.get(dataset, {}).get(threat, {}).get(column, {})
        values = per_eps.get(eps)
        if values is None or method not in cls.paper_columns:
            return None
        return values[cls.paper_columns.index(method)]

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        keys = [m.key for m in cls.methods]
        p.add_argument("--dataset", default=next(iter(cls.numbers)), help=f"one of: {', '.join(cls.numbers)}")
        p.add_argument(
            "--methods",
            help=f"comma-separated subset of: {', '.join(keys)} (default: the paper's columns for the dataset)",
        )
        p.add_argument("--seeds", type=int, default=1, help="independent trainings per method")
        p.add_argument(
            "--epochs",
            type=int,
            help="default: the budget's (full: "
            + ", ".join(f"{d} {n}" for d, n in cls.default_epochs.items())
            + "; the paper: "
            + ", ".join(f"{d} {n}" for d, n in cls.paper_epochs.items())
            + ")",
        )
        add_epochs_for_argument(
            p,
            ", ".join(f"{m}={n}" for per in cls.default_epochs_for.values() for m, n in per.items())
            + ", the default of --budget full"
            if cls.default_epochs_for
            else f"{keys[0]}=2",
        )
        p.add_argument(
            "--budget",
            default="full",
            choices=list(BUDGETS),
            help="smoke: 1 epoch on 1000 images, 40 test points, without the slow attacks (JSMA, C&W, EAD); "
            "full: the protocol's epochs, 1000 points",
        )
        p.add_argument("--n", type=int, help="test points the attacks run on (default: the budget's)")
        p.add_argument(
            "--subset",
            metavar="N|all",
            help="train on a seeded subset of N training images, or on all of them (default: the budget's; "
            "full: "
            + (
                ", ".join(f"{d} {n}" for d, n in cls.default_subset.items()) + ", else all"
                if cls.default_subset
                else "all"
            )
            + "; the table header says REDUCED)",
        )
        p.add_argument(
            "--arch",
            help="train every model with this architecture instead of the paper's (a quick look; the table "
            "header says so)",
        )
        p.add_argument(
            "--audit",
            default="fast",
            choices=["fast", "standard", "off"],
            help="audit the white-box ε with this preset (docs/audit.md), or not",
        )

    def settings(self, args: argparse.Namespace) -> TableSettings:
        from ..domains import COUNT, check

        if args.dataset not in self.numbers:
            raise UserError(
                f"{self.name} has the paper's numbers for {', '.join(self.numbers)}, not {args.dataset!r}; "
                "pass --dataset with one of them"
            )
        keys = [m.key for m in self.methods]
        default = self.default_methods.get(args.dataset, keys)
        asked = [m for m in (args.methods.split(",") if args.methods is not None else default) if m]
        unknown = [m for m in asked if m not in keys]
        if unknown or not asked:
            raise UserError(f"--methods: unknown method(s) {unknown or asked}; choose from {', '.join(keys)}")
        budget = BUDGETS[args.budget]
        s = TableSettings(
            dataset=args.dataset,
            methods=[k for k in keys if k in asked],
            seeds=args.seeds,
            epochs=args.epochs or budget["epochs"] or self.default_epochs[args.dataset],
            paper_epochs=self.paper_epochs[args.dataset],
            budget=args.budget,
            n=args.n or budget["n"],
            subset=self.subset(args, budget),
            val_subset=budget["val_subset"],
            audit=None if args.audit == "off" else args.audit,
            arch=args.arch,
            slow_n=budget["slow_n"],
            version_seeds=budget["version_seeds"],
            data_dir=args.data_dir,
        )
        default_for = self.default_epochs_for.get(args.dataset, {}) if args.budget == "full" and not args.epochs else {}
        chosen = {**default_for, **epochs_for(args.epochs_for, keys)}
        s.epochs_for = {m: n for m, n in chosen.items() if m in s.methods and n != s.epochs}
        if s.arch is not None:
            from .. import models

            models.MODELS.get(s.arch)  # unknown: one line naming the choices
        for key in ("seeds", "epochs", "n"):
            check(f"--{key}", key, getattr(s, key), COUNT)
        return s

    def subset(self, args: argparse.Namespace, budget: dict[str, Any]) -> int | None:
        """The training images every model trains on (None: all): ``--subset``, else the budget's, else
        the protocol's default for the dataset."""
        from ..domains import COUNT, check

        if args.subset is None:
            return budget["subset"] or self.default_subset.get(args.dataset)
        if args.subset == "all":
            return None
        try:
            n = int(args.subset)
        except ValueError:
            raise UserError(f"--subset: expected a number of training images or 'all', got {args.subset!r}") from None
        check("--subset", "subset", n, COUNT)
        return n

    def train_config(self, s: TableSettings, method: Method, seed: int) -> TrainConfig:
        return TrainConfig(
            defense=method.defense,
            hparams=dict(method.hparams),
            dataset=s.dataset,
            **{**self.routine, **method.train, **({"arch": s.arch} if s.arch else {})},
            epochs=s.epochs if method is self.surrogate else s.epochs_for.get(method.key, s.epochs),
            subset=s.subset,
            val_subset=s.val_subset,
            seed=seed,
            data_dir=s.data_dir,
        )

    def surrogate_config(
        self, s: TableSettings, members: int | None = None, seed: int = SURROGATE_SEED
    ) -> dict[str, Any] | None:
        if self.surrogate is None:
            return None
        cfg = self.train_config(s, self.surrogate, seed).to_dict()
        cfg.pop("data_dir")
        if members is not None:
            cfg["n_members"] = members
        return cfg

    def version_surrogates(self, s: TableSettings, versions: Versions) -> list[dict[str, Any]]:
        """The surrogates of ``versions`` other than the main one (``surrogate_config(s)``)."""
        main = self.surrogate_config(s)
        out = []
        for members in versions.members:
            for k in range(versions.seeds):
                cfg = self.surrogate_config(s, members, SURROGATE_SEED + k)
                if cfg is not None and cfg != main:
                    out.append(cfg)
        return out

    def record_config(self, s: TableSettings, method: Method, seed: int) -> TrainConfig:
        """The config a model's record is keyed on: its training config, with nothing of this machine in it."""
        return self.train_config(s, method, seed)

    def prepare(self, s: TableSettings, method: Method, log: Log) -> None:
        """What must exist before ``method`` trains (nothing here; GAL's static EAT source)."""

    def eval_specs(self, s: TableSettings) -> list[tuple[AttackSet, EvalSpec]]:
        """Each attack set the budget runs, with the evaluation spec that measures it."""
        out = []
        for group in self.attack_sets(s.dataset):
            if not s.points(group):
                continue
            versions = s.versions(group)
            spec = EvalSpec(
                dataset=s.dataset,
                attacks=list(group.attacks),
                eps=list(group.eps),
                n=s.points(group),
                seed=0,
                white_box=group.threat == "white_box",
                black_box=group.threat == "black_box",
                surrogate_config=self.surrogate_config(s) if group.threat == "black_box" else None,
                attack_options={a: dict(o) for a, o in group.options.items()},
                data_dir=s.data_dir,
                audit=s.audit if group.audit else None,
                version_surrogates=self.version_surrogates(s, versions) if versions else None,
                version_losses=versions.losses if versions else ("ce", "cw"),
                # the sanity checks are L∞ (tune_div.eval.sanity): only beside L∞ white-box attacks
                sanity=group.threat == "white_box" and all(ATTACKS.get(a).norm == "linf" for a in group.attacks),
            )
            out.append((group, spec))
        return out

    def measure(self, s: TableSettings, method: Method, seed: int, log: Log, records: RunRecords) -> dict[str, Any]:
        """Train (cached) one method at one seed and measure every attack set on it; from its record
        when ``records`` has one."""
        cfg, record_cfg = self.train_config(s, method, seed), self.record_config(s, method, seed)
        specs = self.eval_specs(s)
        spec_list = [spec for _, spec in specs]
        recorded = records.get(method.key, record_cfg, spec_list, log)
        if recorded is not None:
            return recorded
        self.prepare(s, method, log)
        ens, history, cached = train_cached(cfg, log)
        if cached:
            log("  trained model from the cache")
        test_loader = data.TensorLoader(*data.load(s.dataset, "test", s.data_dir), EVAL_BATCH)
        clean, _ = ensemble_and_member_accuracy(ens, test_loader)
        run: dict[str, Any] = {
            "seed": seed,
            "clean": clean,
            "clean_n": len(test_loader.labels),
            "acc": {"white_box": {}, "black_box": {}},
            "audit": {},
            "flags": [],
            "train_s": sum(h.get("epoch_time_s", 0.0) for h in history),
            "epochs_trained": len(history),
        }
        for group, spec in specs:
            result, hit = evaluate_cached(ens, cfg, spec, log)
            tm = result["threat_models"]
            acc = (
                tm["white_box"]
                if group.threat == "white_box"
                else tm["black_box_versions" if group.versions else "black_box"]["acc"]
            )
            for attack in group.attacks:
                run["acc"][group.threat].setdefault(group.column(attack), {}).update(acc[attack])  # sets share columns
            if group.threat == "black_box":
                run["surrogate_clean"] = tm["black_box"]["surrogate"]["clean_acc"]
            if result.get("audit"):
                run["audit"].update(result["audit"]["robust_acc"])
            run["flags"] = sorted(set(run["flags"]) | {f["name"] for f in result["flags"]})
            log(
                f"  evaluated{' (from the cache)' if hit else ''}: {group.threat} "
                f"{', '.join(group.attacks)} at ε {', '.join(map(str, group.eps))}"
                f"{', audited' if result.get('audit') else ''}, n={result['n']}"
            )
        records.put(self.name, method.key, record_cfg, spec_list, run)
        return run

    def run(self, args: argparse.Namespace, out: Path, log: Log) -> dict[str, Any]:
        s = self.settings(args)
        data.load(s.dataset, "test", s.data_dir, subset=1)  # a missing dataset: one line, before any work
        started = time.time()
        runs: dict[str, list[dict[str, Any]]] = {}
        diverged: dict[str, str] = {}
        total = len(s.methods) * s.seeds
        records = RunRecords(out / "records")
        for i, key in enumerate(s.methods):
            method = self.method(key)
            for seed in range(s.seeds):
                cfg = self.train_config(s, method, seed)
                log(
                    f"{method.label} seed {seed}: {cfg.n_members} x {cfg.arch}, {cfg.epochs} epochs "
                    f"(model {i * s.seeds + seed + 1} of {total})"
                )
                try:
                    runs.setdefault(key, []).append(self.measure(s, method, seed, log, records))
                except DivergenceError as exc:  # the table goes on without it, and says why
                    diverged[key] = f"seed {seed}: {exc}"
                    log(f"  {method.label} diverged, left out of the table: {exc}")
                    runs.pop(key, None)
                    break
        s.methods = [m for m in s.methods if m in runs]
        if not s.methods:
            raise DivergenceError("every method diverged: " + "; ".join(f"{m} {r}" for m, r in diverged.items()))
        rows = self.aggregate(s, runs)
        doc = {
            "protocol": self.name,
            "paper": self.paper,
            "table": self.table,
            "settings": s.public(),
            "labels": {m.key: m.label for m in self.methods},
            "columns": {
                **{
                    g.column(a): g.column_label(a, s.versions(g))
                    + (f", {s.points(g)} points" if s.points(g) < s.n else "")
                    for g in self.attack_sets(s.dataset)
                    for a in g.attacks
                },
                "audit": "audit",
                "clean": "clean",
            },
            "not_run": [g.column_label(a) for g in self.attack_sets(s.dataset) if not s.points(g) for a in g.attacks],
            "deviations": list(self.deviations),
            "diverged": diverged,
            "machine": machine(),
            "seconds": time.time() - started,
            "command": getattr(args, "command_line", ""),
            "rows": rows,
            "kendall_tau": self.taus(s, rows),
            "runs": runs,
        }
        self.write(doc, out)
        return doc

    def aggregate(self, s: TableSettings, runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Mean ± std over seeds (in %) per threat, column, ε and method, with the paper's value."""
        rows: list[dict[str, Any]] = []

        def add(
            threat: str,
            column: str,
            eps: float,
            method: str,
            values: Sequence[float],
            points: int,
            paper_column: str | None = None,
        ) -> None:
            mean, std = mean_std([100 * v for v in values])
            low, high = seed_interval(values, points)
            rows.append(
                {
                    "threat": threat,
                    "column": column,
                    "eps": eps,
                    "method": method,
                    "measured": mean,
                    "std": std,
                    "ci_low": low,
                    "ci_high": high,
                    "seeds": len(values),
                    "n": points,
                    "paper": self.paper_value(s.dataset, threat, paper_column or column, eps, method),
                }
            )

        for m in s.methods:
            add("clean", "clean", 0.0, m, [r["clean"] for r in runs[m]], runs[m][0]["clean_n"])
        for group in (g for g in self.attack_sets(s.dataset) if s.points(g)):
            for attack in group.attacks:
                for eps in group.eps:
                    for m in s.methods:
                        values = [r["acc"][group.threat][group.column(attack)][str(eps)] for r in runs[m]]
                        add(
                            group.threat,
                            group.column(attack),
                            eps,
                            m,
                            values,
                            s.points(group),
                            group.paper_column(attack),
                        )
            if group.audit and s.audit:
                for eps in group.eps:
                    for m in s.methods:
                        add("white_box", "audit", eps, m, [r["audit"][str(eps)] for r in runs[m]], s.n)
        return rows

    def taus(self, s: TableSettings, rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
        """Kendall's τ-b of the methods' ranking against the paper's, per threat, ε and column."""
        out: dict[str, dict[str, dict[str, float | None]]] = {}
        cells: dict[tuple[str, str, float], list[tuple[float, float]]] = {}
        for r in rows:
            if r["paper"] is not None and r["threat"] != "clean":
                cells.setdefault((r["threat"], r["column"], r["eps"]), []).append((r["measured"], r["paper"]))
        for (threat, column, eps), pairs in cells.items():
            tau = kendall_tau([a for a, _ in pairs], [b for _, b in pairs])
            out.setdefault(threat, {}).setdefault(str(eps), {})[column] = tau
        return out

    def stem(self, doc: dict[str, Any], out: Path) -> Path:
        return out / f"{self.name}_{doc['settings']['dataset']}"

    def write(self, doc: dict[str, Any], out: Path) -> None:
        """``<out>/<protocol>_<dataset>.{json,csv,md,png}``."""
        out.mkdir(parents=True, exist_ok=True)
        stem = self.stem(doc, out)
        atomic_write_text(stem.with_suffix(".json"), json.dumps(doc, indent=2))
        buf = io.StringIO()
        fields = ["threat", "column", "eps", "method", "measured", "std", "ci_low", "ci_high", "seeds", "n", "paper"]
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(doc["rows"])
        atomic_write_text(stem.with_suffix(".csv"), buf.getvalue())
        atomic_write_text(stem.with_suffix(".md"), markdown(doc))
        plot(doc, stem.with_suffix(".png"))


def cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not run"
    text = f"{row['measured']:.1f}" + (f" ±{row['std']:.1f}" if row["seeds"] > 1 else "")
    return text + (f" ({row['paper']:.1f})" if row["paper"] is not None else "")


def trained_note(doc: dict[str, Any], method: str, epochs: int) -> str:
    """`` (early stopping: trained 212)`` where a method's seeds stopped before ``epochs``, else empty."""
    trained = sorted({r.get("epochs_trained", epochs) for r in doc["runs"].get(method, [])})
    if not trained or trained == [epochs]:
        return ""
    return f" at most (early stopping: trained {', '.join(map(str, trained))})"


def markdown(doc: dict[str, Any]) -> str:
    s, labels = doc["settings"], doc["labels"]
    reduced = s["epochs"] < s["paper_epochs"]
    lines = [
        f"# {doc['paper']}, {doc['table']}, on {s['dataset']}: measured (paper)",
        "",
        f"- methods: {', '.join(labels[m] for m in s['methods'])}; {s['epochs']} epochs"
        + (f" (REDUCED: the paper trains {s['paper_epochs']})" if reduced else f" (the paper: {s['paper_epochs']})")
        + "".join(f"; {labels[m]}: {n} epochs{trained_note(doc, m, n)}" for m, n in s.get("epochs_for", {}).items())
        + f"; {s['seeds']} seed(s) (mean ±std); budget `{s['budget']}`"
        + (f" (train subset {s['subset']}, validation subset {s['val_subset']})" if s["val_subset"] else ""),
        *(
            [f"- REDUCED: every model trains on a seeded subset of {s['subset']:,} training images, not all of them"]
            if s["subset"] and s["budget"] != "smoke"
            else []
        ),
        f"- robust accuracy on {s['n']} test points (fixed seeded subset), clean accuracy on the whole test split",
        interval_note(s["n"]),
        (
            f"- audit: {s['audit']} preset beside each white-box L∞ ε (worst case of five attacks per point, "
            "docs/audit.md)"
            if s["audit"]
            else "- audit: off. NOT AUDITED: the attacks' accuracies are upper bounds on robust accuracy"
        ),
        f"- machine: {doc['machine']}; {doc['seconds'] / 60:.1f} min"
        + (f"; command: `{doc['command']}`" if doc.get("command") else ""),
        "- Kendall τ: the methods' ranking per attack and ε against the paper's (1 same order, -1 reversed)",
        *(
            [f"- ARCHITECTURE CHANGED: every model is a `{s['arch']}` (`--arch`), not the paper's"]
            if s.get("arch")
            else []
        ),
        *(
            [f"- not run at budget `{s['budget']}` (the slow attacks): {', '.join(doc['not_run'])}"]
            if doc.get("not_run")
            else []
        ),
        "",
        "Settings the paper lost or we changed:",
        "",
        *[f"- {d}" for d in doc["deviations"]],
        "",
    ]
    by = {(r["threat"], r["column"], r["eps"], r["method"]): r for r in doc["rows"]}
    methods = s["methods"]
    lines += [
        "| clean | " + " | ".join(labels[m] for m in methods) + " |",
        "|---|" + "---|" * len(methods),
        "| clean | " + " | ".join(cell(by.get(("clean", "clean", 0.0, m))) for m in methods) + " |",
        "",
    ]
    for threat, title in THREAT_TITLES.items():
        keys = sorted(
            {(r["column"], r["eps"]) for r in doc["rows"] if r["threat"] == threat},
            key=lambda k: (k[0] == "audit", k[0], k[1]),
        )
        if not keys:
            continue
        lines += [
            f"## {title.capitalize()}",
            "",
            "| attack | ε | " + " | ".join(labels[m] for m in methods) + " | τ |",
            "|---|---|" + "---|" * (len(methods) + 1),
        ]
        for column, eps in keys:
            tau = doc["kendall_tau"].get(threat, {}).get(str(eps), {}).get(column)
            lines.append(
                f"| {doc['columns'].get(column, column)} | {eps} | "
                + " | ".join(cell(by.get((threat, column, eps, m))) for m in methods)
                + f" | {'—' if tau is None else f'{tau:+.2f}'} |"
            )
        lines.append("")
    lines += closing_lines(doc, labels)
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: Path) -> None:
    """Per threat, the L∞ attack measured at most ε against ε per method (the audit dashed), the paper's
    values dotted."""
    from ..tracking.plots import _pyplot

    plt = _pyplot()
    s, labels = doc["settings"], doc["labels"]
    threats = [t for t in THREAT_TITLES if any(r["threat"] == t for r in doc["rows"])]
    fig, axes = plt.subplots(1, len(threats), figsize=(5.5 * len(threats), 4), squeeze=False, sharey=True)
    for ax, threat in zip(axes[0], threats):
        rows = [r for r in doc["rows"] if r["threat"] == threat and r["column"] != "audit"]
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["column"]] = counts.get(r["column"], 0) + 1
        column = "pgd" if "pgd" in counts else max(counts, key=lambda c: counts[c])
        for i, m in enumerate(s["methods"]):
            picked = sorted((r for r in rows if r["column"] == column and r["method"] == m), key=lambda r: r["eps"])
            ax.plot([r["eps"] for r in picked], [r["measured"] for r in picked], "o-", color=f"C{i}", label=labels[m])
            paper = [(r["eps"], r["paper"]) for r in picked if r["paper"] is not None]
            if paper:
                ax.plot(*zip(*paper), ":", color=f"C{i}", alpha=0.7)
            audit = sorted(
                (r for r in doc["rows"] if r["column"] == "audit" and r["method"] == m and threat == "white_box"),
                key=lambda r: r["eps"],
            )
            if audit:
                ax.plot([r["eps"] for r in audit], [r["measured"] for r in audit], "--", color=f"C{i}", alpha=0.7)
        audited = threat == "white_box" and s["audit"]
        ax.set_title(
            f"{threat.replace('_', '-')} {doc['columns'].get(column, column)}; dotted: paper"
            + ("; dashed: audit" if audited else "")
        )
        ax.set_xlabel("ε")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{doc['paper']} {doc['table']} on {s['dataset']}, {s['epochs']} epochs, {s['seeds']} seed(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
