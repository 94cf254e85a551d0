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
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "samples": 4,
        "epochs": 2,
        "subset": 5000,
        "val_subset": 1000,
        "objective_n": 200,
        "sanity_n": 100,
        "test_n": 500,
    },
    "small": {
        "samples": 16,
        "epochs": 5,
        "subset": 10000,
        "val_subset": 2000,
        "objective_n": 500,
        "sanity_n": 200,
        "test_n": 1000,
    },
    "paper": {
        "samples": 32,
        "epochs": None,
        "subset": None,
        "val_subset": None,
        "objective_n": 1000,
        "sanity_n": 200,
        "test_n": None,
    },
}


SETTINGS_DOMAINS = {
    "defense": Text(),
    "dataset": Text(),
    "arch": Text(),
    "members": COUNT,
    "epochs": COUNT,
    "samples": COUNT,
    "budget": OneOf(tuple(BUDGETS)),
    "sampler": OneOf(SAMPLERS),
    "objective": OneOf(tuple(OBJECTIVES)),
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
    objective: str
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

    @property
    def metrics(self) -> list[str]:
        return OBJECTIVES[self.objective]

    @property
    def path(self) -> Path:
        return Path(self.storage_path) / self.experiment

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

    def check(self) -> None:
        """Every field against its domain, the names against the registries."""
        for name, domain in SETTINGS_DOMAINS.items():
            check("search settings", name, getattr(self, name), domain)
        defenses.DEFENSES.get(self.defense)
        data.info(self.dataset)
        models.MODELS.get(self.arch)

    @classmethod
    def from_args(cls, args) -> Settings:
        """Validated settings from the parsed command line; nothing is written."""
        if not args.defense:
            raise UserError(f"name the defense to search, one of: {', '.join(defenses.names())}")
        defenses.DEFENSES.get(args.defense)
        meta = data.info(args.dataset)
        budget = BUDGETS[args.budget]
        arch = args.arch or meta.default_arch
        models.MODELS.get(arch)
        epochs = args.epochs or budget["epochs"] or meta.epochs
        samples = args.samples if args.samples is not None else budget["samples"]
        for name, value in (("--samples", samples), ("--epochs", epochs), ("--members", args.members)):
            if value < 1:
                raise UserError(f"{name} must be at least 1, got {value}")
        if args.gpus < 0 or args.cpus_per_trial <= 0:
            raise UserError("--gpus must be >= 0 and --cpus-per-trial > 0")
        gpt = (
            args.gpus_per_trial
            if args.gpus_per_trial is not None
            else (min(float(args.gpus), device_defaults.gpus_per_trial()) if args.gpus > 0 else 0.0)
        )
        if gpt < 0 or (gpt > 0 and args.gpus == 0):
            raise UserError(f"--gpus-per-trial {gpt} needs --gpus > 0 (the GPUs the whole search may use)")
        if gpt > args.gpus > 0:
            raise UserError(f"--gpus-per-trial {gpt} is more than --gpus {args.gpus}")
        if args.clean_floor is not None and not 0 <= args.clean_floor <= 1:
            raise UserError(f"--clean-floor is an accuracy in [0, 1], got {args.clean_floor}")
        if args.subset is not None and args.subset < 1:
            raise UserError(f"--subset must be a positive number of images, got {args.subset}")
        if args.concurrency is not None and args.concurrency < 1:
            raise UserError(f"--concurrency must be at least 1, got {args.concurrency}")
        # Trials run in their own working directories: hand them an absolute data folder.
        data_dir = args.data_dir or os.environ.get("TUNE_DIV_DATA")
        if data_dir:
            if not Path(data_dir).expanduser().is_dir():
                raise UserError(f"data folder {data_dir} (--data-dir or TUNE_DIV_DATA) does not exist")
            data_dir = str(Path(data_dir).expanduser().resolve())
        space = search_space.load(args.defense, args.space, args.dataset)  # validates the file now
        if args.inject_nan_if:
            parse_injection(args.inject_nan_if, space)
        experiment = args.experiment or f"{args.defense}-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        check("--experiment", "name", experiment, Text())
        if "/" in experiment or experiment in (".", ".."):
            raise UserError(f"--experiment {experiment!r} must be a folder name, not a path")
        s = cls(
            args.defense,
            args.dataset,
            arch,
            args.members,
            epochs,
            samples,
            args.budget,
            args.sampler,
            args.objective,
            args.clean_floor,
            args.gpus,
            gpt,
            args.cpus_per_trial,
            args.concurrency,
            args.seed,
            str(Path(args.space).resolve()) if args.space else None,
            data_dir,
            args.inject_nan_if,
            experiment,
            str(Path(args.storage_path).expanduser().resolve()),
            args.subset,
            args.tracking_uri,
            audit=args.audit,
            scheduler=args.scheduler or ("moasha" if epochs >= 4 else "fifo"),
            grace_period=args.grace_period,
            reduction_factor=args.reduction_factor,
            max_retries=args.max_retries,
            execution=args.execution or "auto",
        )
        s.check()
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


def objective_spec(s: Settings, n: int) -> Objective:
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
        objective=objective_spec(s, budget["objective_n"]),
        sanity_n=budget["sanity_n"],
        test_n=budget["test_n"],
        rungs=tuple(s.rungs),
        inject_nan_if=parse_injection(s.inject_nan_if) if s.inject_nan_if else None,
    )
