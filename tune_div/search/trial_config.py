"""The trial config: what every trial of a search is told, as typed objects.

It crosses the Ray boundary once each way: :meth:`TrialConfig.to_dict` builds the Tuner's
``param_space`` (the searcher adds the sampled ``hparams`` and ``train`` entries to it), and
:meth:`TrialConfig.from_dict` reads a trial's config back in the trainable, the callbacks and the
results. Everywhere else it is read by attribute. A key that is unknown, or a required key that is
missing, is an error when the object is built. It is never silently replaced by a default.

The dict layout (kept as it was, so experiments started before this module resume):

```python
{"defense": "smd", "hparams": {"lam": 0.7}, "train": {"lr": 1e-3},           # sampled
 "base": {TrainConfig fields: dataset, arch, n_members, epochs, subset, ...},  # fixed for the search
 "objective": {"attack": "pgd_cw_logits", "eps": 0.1, "steps": 10, "n": 500, "seed": 0, "audit": "fast"},
 "sanity_n": 100, "test_n": 1000, "rungs": [1, 3], "inject_nan_if": None,
 "blackbox": {"config": surrogate TrainConfig dict, "root": surrogate cache folder},  # only when set
 "test_report": True}                                                            # the baseline only
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import UserError
from ..train import TrainConfig
from . import space as search_space


def _strict(kind: str, doc: Any, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise UserError(f"{kind}: expected a mapping, got {type(doc).__name__}")
    unknown = sorted(set(doc) - required - optional)
    missing = sorted(required - set(doc))
    problems = ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing key(s) {missing}"] if missing else [])
    if problems:
        raise UserError(f"{kind}: {'; '.join(problems)}; valid: {sorted(required | optional)}")
    return doc


@dataclass(frozen=True)
class Objective:
    """How the robust objective is measured: ``attack`` (the proxy, PGD-class) for ``steps`` at ``eps`` on
    a fixed subset of ``n`` validation points drawn with ``seed``; ``audit`` the audit preset run after
    the last epoch (None: not audited, the robust number is then the proxy's)."""

    attack: str
    eps: float
    steps: int | None
    n: int | None
    seed: int
    audit: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def attack_names(self) -> tuple[str, ...]:
        """The registered attacks this objective runs: the proxy, and ``audit`` when audited."""
        return (self.attack, *(("audit",) if self.audit else ()))

    @classmethod
    def from_dict(cls, doc: Any) -> Objective:
        names = {f.name for f in fields(cls)}
        return cls(**_strict("trial objective", doc, names, set()))


@dataclass(frozen=True)
class Blackbox:
    """The search's black-box surrogate: its TrainConfig dict and the cache folder that holds it."""

    config: dict[str, Any]
    root: str


@dataclass(frozen=True)
class TrialConfig:
    """One trial's config (the module docstring has the dict layout)."""

    defense: str
    base: dict[str, Any]  # TrainConfig fields fixed for the search
    objective: Objective
    sanity_n: int  # points of the sanity pass after the last epoch (0: none)
    test_n: int | None  # test points of the final report (None: the whole split)
    rungs: tuple[int, ...]  # epochs where the proxy is measured and the scheduler compares trials
    inject_nan_if: tuple[str, float] | None = None  # fault injection for tests: (hyperparameter, threshold)
    hparams: dict[str, Any] = field(default_factory=dict)  # sampled defense hyperparameters
    train: dict[str, Any] = field(default_factory=dict)  # sampled training parameters (search space names)
    blackbox: Blackbox | None = None
    test_report: bool = False  # measure the test split at the end (the naive baseline, a single model)

    REQUIRED = frozenset({"defense", "base", "objective", "sanity_n", "test_n", "rungs", "inject_nan_if"})
    OPTIONAL = frozenset({"hparams", "train", "blackbox", "test_report"})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.base) - {f.name for f in fields(TrainConfig)})
        if unknown:
            raise UserError(f"trial config: unknown training field(s) {unknown} in 'base'")

    @classmethod
    def from_dict(cls, doc: Any) -> TrialConfig:
        d = _strict("trial config", doc, set(cls.REQUIRED), set(cls.OPTIONAL))
        inject = d.get("inject_nan_if")
        box = d.get("blackbox")
        return cls(
            defense=d["defense"],
            base=dict(d["base"]),
            objective=Objective.from_dict(d["objective"]),
            sanity_n=int(d["sanity_n"]),
            test_n=d["test_n"],
            rungs=tuple(int(r) for r in d["rungs"]),
            inject_nan_if=None if inject is None else (str(inject[0]), float(inject[1])),
            hparams=dict(d.get("hparams") or {}),
            train=dict(d.get("train") or {}),
            blackbox=None if box is None else Blackbox(**_strict("trial blackbox", box, {"config", "root"}, set())),
            test_report=bool(d.get("test_report", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The Ray-side dict; ``blackbox`` and ``test_report`` only when set, as the layout has them."""
        out: dict[str, Any] = {
            "defense": self.defense,
            "hparams": dict(self.hparams),
            "train": dict(self.train),
            "base": dict(self.base),
            "objective": self.objective.to_dict(),
            "sanity_n": self.sanity_n,
            "test_n": self.test_n,
            "rungs": list(self.rungs),
            "inject_nan_if": None if self.inject_nan_if is None else list(self.inject_nan_if),
        }
        if self.blackbox is not None:
            out["blackbox"] = dataclasses.asdict(self.blackbox)
        if self.test_report:
            out["test_report"] = True
        return out

    def replace(self, **changes: Any) -> TrialConfig:
        return dataclasses.replace(self, **changes)

    def train_config(self) -> TrainConfig:
        """The TrainConfig this trial trains: the fixed base, the sampled training parameters, the defense."""
        return TrainConfig.from_dict(
            {**self.base, **search_space.apply(self.train), "defense": self.defense, "hparams": dict(self.hparams)}
        )

    def objective_block(self) -> dict[str, Any]:
        """The ``objective`` block of an exported config: the objective and the test split's size."""
        return {**self.objective.to_dict(), "test_n": self.test_n}

    def logged_params(self) -> dict[str, Any]:
        """What a trial's MLflow run records besides its sampled values: the fixed part (no surrogate)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("hparams", "train", "blackbox")}

    def sampled(self) -> dict[str, Any]:
        """The sampled values, defense hyperparameters and training parameters in one mapping."""
        return {**self.hparams, **self.train}
