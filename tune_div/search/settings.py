"""A search's settings: validated once from the command line, saved once as ``search.json``.

``search.json`` (in the experiment folder) is what ``--resume`` reads back; it is written atomically,
after the MLflow parent run exists, so a resumed search re-attaches to the same runs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .. import attacks, data, defenses, device_defaults, models
from ..attacks.audit import PRESETS as AUDIT_PRESETS
from ..domains import (
    COUNT,
    LINF_EPS,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    SEED,
    Int,
    Maybe,
    OneOf,
    Text,
    check,
    check_all,
)
from ..errors import UserError
from ..files import atomic_write_text
from ..tracking import uri as tracking_uri
from ..tracking.dashboard import STUDY_FILE
from . import space as search_space
from .trial_config import Objective, TrialConfig

SAMPLERS = ("tpe", "nsga2", "gp", "random")
OBJECTIVES = {
    "robust": ["val_clean_acc", "val_robust_acc"],
    "blackbox": ["val_clean_acc", "val_blackbox_acc"],
    "both": ["val_clean_acc", "val_robust_acc", "val_blackbox_acc"],
}
# The proxy objective: PGD-10 on the CW margin of the mean member logits, at the dataset's objective eps,
# on a fixed, seeded validation subset; audited after a trial's last epoch (docs/audit.md).
OBJECTIVE_DEFAULTS: dict[str, Any] = {"attack": "pgd_cw_logits", "steps": 10, "n": 500, "seed": 0, "audit": "fast"}
AUDITS = ("off", "fast", "standard")
SCHEDULERS = ("fifo", "moasha")
FINAL = "final"  # result key: True on a trial's last epoch (not Ray's reserved "done", which a stop sets too)
SETTINGS_FILE = "search.json"

# Budgets: smoke finishes on a 2-core CPU in a few minutes; paper uses the papers' epochs, full data.
# ``confirm``: fresh seeds each confirmed front member is retrained with after the search (search/confirm.py),
# ``confirm_top``: how many members, the knee and the best robust first (0: the whole front). Smoke checks
# the pipeline and confirms nothing unless asked.
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "samples": 4,
        "epochs": 2,
        "subset": 5000,
        "val_subset": 1000,
        "objective_n": 200,
        "sanity_n": 100,
        "test_n": 500,
        "confirm": 0,
        "confirm_top": 2,
    },
    "small": {
        "samples": 16,
        "epochs": 5,
        "subset": 10000,
        "val_subset": 2000,
        "objective_n": 500,
        "sanity_n": 200,
        "test_n": 1000,
        "confirm": 2,
        "confirm_top": 2,
    },
    "paper": {
        "samples": 32,
        "epochs": None,
        "subset": None,
        "val_subset": None,
        "objective_n": 1000,
        "sanity_n": 200,
        "test_n": None,
        "confirm": 2,
        "confirm_top": 0,
    },
}


# What was measured where a budget ranks a defense against the naive baseline otherwise than the paper
# budget (SMD: `tune-div reproduce budget-check`, docs/reproduction.md "Budget check"; GAL: a confirmed
# small search against smd-table's 50-epoch run): said at the end of every search with that budget,
# dataset and defense.
BUDGET_CHECKS: dict[tuple[str, str, str], str] = {
    ("small", "mnist", "smd"): (
        "SMD (lam 1) is below the naive ensemble at this budget (audited test lift -0.020 and -0.073 at seeds "
        "0 and 1, pooled exact McNemar p < 1e-9), but at the paper budget, 50 epochs on all of MNIST, it is "
        "+0.174 at seed 0 and -0.166 at seed 1 (not told apart): this budget's ranking of SMD against no "
        "defense is not the paper budget's, which itself needs more seeds. Rank SMD against naive with "
        "--budget paper and --confirm (docs/reproduction.md, 'Budget check')."
    ),
    ("small", "mnist", "gal"): (
        "every confirmed front member of a small GAL search is below the naive ensemble (test lift -0.03 to "
        "-0.07 over 3 seeds, README 'How sure each number is'), while GAL (lam 0.5) trained 50 epochs on all "
        "of MNIST was above it under the audit in the one seed run (83.9 against 68.0 at eps 0.1, smd-table): "
        "this budget may rank GAL against no defense otherwise than the paper budget; check it there over "
        "seeds (--budget paper --confirm)."
    ),
}


CLI = "command line"  # check()'s ``what`` for values that came from flags: errors name the flag
FLAGS = {"objectives": "--objective", "space_file": "--space"}  # fields whose flag is named otherwise

SETTINGS_DOMAINS = {
    "defense": Text(),
    "dataset": Text(),
    "arch": Text(),
    "members": COUNT,
    "epochs": COUNT,
    "samples": COUNT,
    "budget": OneOf(tuple(BUDGETS)),
    "sampler": OneOf(SAMPLERS),
    "objectives": OneOf(tuple(OBJECTIVES)),
    "clean_floor": Maybe(PROBABILITY),
    "gpus": NON_NEGATIVE,
    "gpus_per_trial": NON_NEGATIVE,
    "cpus_per_trial": POSITIVE,
    "concurrency": Maybe(COUNT),
    "seed": SEED,
    "space_file": Maybe(Text()),
    "data_dir": Maybe(Text()),
    "inject_nan_if": Maybe(Text()),
    "experiment": Text(),
    "storage_path": Text(),
    "subset": Maybe(COUNT),
    "tracking_uri": Maybe(Text()),
    "parent_run_id": Maybe(Text()),
    "audit": OneOf(AUDITS),
    "scheduler": OneOf(SCHEDULERS),
    "grace_period": COUNT,
    "reduction_factor": Int(min=2),
    "max_retries": Int(min=0),
    "execution": OneOf(models.EXECUTIONS),
    "confirm": Int(min=0),
    "confirm_top": Int(min=0),
}


@dataclass
class Settings:
    defense: str
    dataset: str
    arch: str
    members: int
    epochs: int
    samples: int
    budget: str
    sampler: str
    objectives: str  # which metrics the search optimises: a key of OBJECTIVES
    clean_floor: float | None
    gpus: float
    gpus_per_trial: float
    cpus_per_trial: float
    concurrency: int | None
    seed: int
    space_file: str | None
    data_dir: str | None
    inject_nan_if: str | None
    experiment: str
    storage_path: str
    subset: int | None = None
    tracking_uri: str | None = None
    parent_run_id: str | None = None
    audit: str = "fast"
    scheduler: str = "fifo"
    grace_period: int = 1
    reduction_factor: int = 3
    max_retries: int = 2  # a trial whose worker is lost is retried this often from its last checkpoint
    execution: str = "auto"  # how each trial's members run (TrainConfig.execution)
    confirm: int = 0  # fresh seeds per confirmed front member (search/confirm.py); 0: no confirmation
    confirm_top: int = 2  # the members confirmed: the knee, the best robust, then by robust (0: the front)

    @property
    def metrics(self) -> list[str]:
        return OBJECTIVES[self.objectives]

    @property
    def path(self) -> Path:
        return Path(self.storage_path) / self.experiment

    @property
    def study_path(self) -> Path:
        """The search's Optuna study (an RDB storage; optuna-dashboard serves it as it is)."""
        return self.path / STUDY_FILE

    @property
    def study_url(self) -> str:
        return f"sqlite:///{self.study_path}"

    @property
    def mlflow_experiment(self) -> str:
        return tracking_uri.experiment_name(self.defense, self.dataset)

    @property
    def mlflow_uri(self) -> str:
        return self.tracking_uri or tracking_uri.default_uri(self.storage_path)

    def save(self) -> None:
        atomic_write_text(self.path / SETTINGS_FILE, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Settings:
        """The settings of the experiment in ``folder`` (``--resume``), moved along with its folder."""
        folder = Path(folder).expanduser().resolve()
        path = folder / SETTINGS_FILE
        if not path.is_file():
            raise UserError(f"{folder} is not a tune_div experiment folder (no {SETTINGS_FILE})")
        try:
            doc = json.loads(path.read_text())
            if isinstance(doc, dict) and "objective" in doc:  # the field's name before it was "objectives"
                doc.setdefault("objectives", doc.pop("objective"))
            s = cls(**{f.name: doc[f.name] for f in fields(cls) if f.name in doc})
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise UserError(
                f"{path} is damaged or from another version ({type(exc).__name__}); it cannot be resumed"
            ) from None
        s.storage_path, s.experiment = str(folder.parent), folder.name
        try:
            s.check()
        except UserError as exc:
            raise UserError(f"{path} is damaged or from another version ({exc}); it cannot be resumed") from None
        return s

    def check(self, what: str = "search settings") -> None:
        """Every field against its domain (named as its command-line flag when ``what`` is :data:`CLI`),
        the rules between fields, and the names against the registries."""
        for name, domain in SETTINGS_DOMAINS.items():
            label = FLAGS.get(name, "--" + name.replace("_", "-")) if what == CLI else name
            check(what, label, getattr(self, name), domain)
        if self.gpus_per_trial > 0 and self.gpus == 0:
            raise UserError(
                f"--gpus-per-trial {self.gpus_per_trial} needs --gpus > 0 (the GPUs the whole search may use)"
            )
        if self.gpus_per_trial > self.gpus > 0:
            raise UserError(f"--gpus-per-trial {self.gpus_per_trial} is more than --gpus {self.gpus}")
        if "/" in self.experiment or self.experiment in (".", ".."):
            raise UserError(f"--experiment {self.experiment!r} must be a folder name, not a path")
        defenses.DEFENSES.get(self.defense)
        data.info(self.dataset)
        models.MODELS.get(self.arch)

    @classmethod
    def create(
        cls,
        defense: str | None,
        *,
        dataset: str = "mnist",
        budget: str = "small",
        arch: str | None = None,
        members: int = 3,
        epochs: int | None = None,
        samples: int | None = None,
        subset: int | None = None,
        space: str | None = None,
        sampler: str = "tpe",
        objectives: str = "robust",
        audit: str = "fast",
        scheduler: str | None = None,
        grace_period: int = 1,
        reduction_factor: int = 3,
        max_retries: int = 2,
        clean_floor: float | None = None,
        gpus: float = 0.0,
        gpus_per_trial: float | None = None,
        execution: str | None = None,
        cpus_per_trial: float = 1.0,
        concurrency: int | None = None,
        storage_path: str = "tune_div_results",
        experiment: str | None = None,
        seed: int = 0,
        data_dir: str | None = None,
        tracking_uri: str | None = None,
        inject_nan_if: str | None = None,
        confirm: int | None = None,
        confirm_top: int | None = None,
    ) -> Settings:
        """Validated settings of a new search, from the command line's options by name (``None``: the
        budget's, the dataset's or the device's default); nothing is written. Every value is checked
        once, against :data:`SETTINGS_DOMAINS`, before anything reads a file."""
        if not defense:
            raise UserError(f"name the defense to search, one of: {', '.join(defenses.names())}")
        check(CLI, "--budget", budget, SETTINGS_DOMAINS["budget"])
        given = BUDGETS[budget]
        meta = data.info(dataset)
        if epochs is None:
            epochs = given["epochs"] or meta.epochs
        if gpus_per_trial is None and isinstance(gpus, (int, float)) and gpus > 0:
            gpus_per_trial = min(float(gpus), device_defaults.gpus_per_trial())
        s = cls(
            defense=defense,
            dataset=dataset,
            arch=arch or meta.default_arch,
            members=members,
            epochs=epochs,
            samples=given["samples"] if samples is None else samples,
            budget=budget,
            sampler=sampler,
            objectives=objectives,
            clean_floor=clean_floor,
            gpus=gpus,
            gpus_per_trial=0.0 if gpus_per_trial is None else gpus_per_trial,
            cpus_per_trial=cpus_per_trial,
            concurrency=concurrency,
            seed=seed,
            space_file=str(Path(space).resolve()) if space else None,
            data_dir=data_dir or os.environ.get("TUNE_DIV_DATA"),
            inject_nan_if=inject_nan_if,
            experiment=experiment or f"{defense}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(Path(storage_path).expanduser().resolve()),
            subset=subset,
            tracking_uri=tracking_uri,
            audit=audit,
            scheduler=scheduler or ("moasha" if isinstance(epochs, int) and epochs >= 4 else "fifo"),
            grace_period=grace_period,
            reduction_factor=reduction_factor,
            max_retries=max_retries,
            execution=execution or "auto",
            confirm=given["confirm"] if confirm is None else confirm,
            confirm_top=given["confirm_top"] if confirm_top is None else confirm_top,
        )
        s.check(CLI)
        if s.data_dir:  # trials run in their own working directories: hand them an absolute data folder
            if not Path(s.data_dir).expanduser().is_dir():
                raise UserError(f"data folder {s.data_dir} (--data-dir or TUNE_DIV_DATA) does not exist")
            s.data_dir = str(Path(s.data_dir).expanduser().resolve())
        space_doc = s.space()  # validates the file now
        if s.inject_nan_if:
            parse_injection(s.inject_nan_if, space_doc)
        return s

    @property
    def rungs(self) -> list[int]:
        """The epochs where trials are compared (moasha) and fully evaluated (both schedulers)."""
        return rung_epochs(self.epochs, self.grace_period, self.reduction_factor)

    def space(self) -> search_space.SearchSpace:
        return search_space.load(self.defense, self.space_file, self.dataset)


OBJECTIVE_DOMAINS = {
    "attack": Text(),
    "eps": LINF_EPS,
    "steps": Maybe(COUNT),
    "n": Maybe(COUNT),
    "seed": SEED,
    "audit": Maybe(OneOf(tuple(AUDIT_PRESETS))),
    "test_n": Maybe(COUNT),
}


def check_objective(spec: Any) -> dict[str, Any]:
    """An objective block (a search's, or an exported config's ``objective:``) checked key by key."""
    if not isinstance(spec, dict):
        raise UserError(f"objective: expected a mapping with {sorted(OBJECTIVE_DOMAINS)}, got {spec!r}")
    check_all("objective", spec, OBJECTIVE_DOMAINS)
    if "attack" in spec:
        attacks.ATTACKS.get(spec["attack"])
    return spec


def rung_epochs(epochs: int, grace_period: int, reduction_factor: int) -> list[int]:
    """The rungs below the last epoch: ``grace × η^k < epochs`` (grace 1, η 3, 5 epochs: [1, 3])."""
    out, r = [], grace_period
    while r < epochs:
        out.append(r)
        r *= reduction_factor
    return out


def parse_injection(text: str, space=None) -> tuple[str, float]:
    """``--inject-nan-if PARAM>VALUE`` (fault injection for tests) as ``(param, threshold)``."""
    name, sep, value = text.partition(">")
    try:
        threshold = float(value)
    except ValueError:
        threshold = None
    if not sep or threshold is None:
        raise UserError(f"--inject-nan-if expects PARAM>VALUE, got {text!r}")
    if space is not None and f"hparams/{name}" not in space.names():
        raise UserError(f"--inject-nan-if: '{name}' is not a searched hyperparameter ({', '.join(space.names())})")
    return name, threshold


def objective_for(s: Settings, n: int) -> Objective:
    """How the proxy robust accuracy is measured: the attack, its steps, ε, the subset size and seed."""
    return Objective(
        attack=OBJECTIVE_DEFAULTS["attack"],
        eps=data.info(s.dataset).objective_eps,
        steps=OBJECTIVE_DEFAULTS["steps"],
        n=n,
        seed=s.seed,
        audit=None if s.audit == "off" else s.audit,
    )


def base_config(s: Settings) -> TrialConfig:
    """The fixed part of every trial's config (the searcher fills ``hparams`` and ``train``)."""
    budget = dict(BUDGETS[s.budget])
    if s.subset:
        budget["subset"] = s.subset
    return TrialConfig(
        defense=s.defense,
        base={
            "dataset": s.dataset,
            "arch": s.arch,
            "n_members": s.members,
            "epochs": s.epochs,
            "seed": s.seed,
            "subset": budget["subset"],
            "val_subset": budget["val_subset"],
            "data_dir": s.data_dir,
            "num_threads": max(1, int(s.cpus_per_trial)),
            "execution": s.execution,
        },
        objective=objective_for(s, budget["objective_n"]),
        sanity_n=budget["sanity_n"],
        test_n=budget["test_n"],
        rungs=tuple(s.rungs),
        inject_nan_if=parse_injection(s.inject_nan_if) if s.inject_nan_if else None,
    )
