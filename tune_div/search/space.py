"""Search spaces: load, validate, and sample them with Optuna.

The shipped spaces live at the top of the checkout, ``search_spaces/<defense>.yaml``, and install as the
data package ``tune_div.search_spaces`` (found with ``importlib.resources``, so a non-editable install
finds them), plus one shared block of training parameters (``search_spaces/_train.yaml``) that every
space gets:

```yaml
defense: smd
params:                      # the defense's hyperparameters (names as in the paper / the defense)
  lam: {type: log_float, low: 0.01, high: 100.0}
train:                       # optional: enable or reshape a shared training parameter
  lr: {enabled: true}
```

Types: ``float``, ``log_float``, ``int``, ``log_int``, ``categorical``. The start value of every
parameter (``paper``, evaluated first as a known reference) comes from the code: the defense's paper
value *for the dataset searched* (``defenses.defaults(name, dataset)``), TrainConfig's defaults for the
training parameters. A file may set ``paper:`` to start elsewhere. ``when`` makes a parameter exist
only while another has one of the listed values (``{adv_attack: [pgd]}``) or none of them
(``{adv_attack: {not: [none]}}``). Errors name the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import yaml

from .. import attacks, data, defenses
from ..domains import LINF_EPS, NON_NEGATIVE, POSITIVE, Domain, Float, Int, OneOf
from ..errors import UserError
from ..files import read_yaml
from ..train.config import ADV_TRAIN_DEFAULTS, TrainConfig

TYPES = ("float", "log_float", "int", "log_int", "categorical")
PARAM_KEYS = {"type", "low", "high", "choices", "paper", "when", "enabled", "step"}
TOP_KEYS = {"defense", "params", "train", "description"}
SHARED_TRAIN = "_train.yaml"


def shipped(name: str):
    """A file of the shipped spaces (a Traversable; a real path on a normal install)."""
    return resources.files("tune_div.search_spaces") / name


def condition_holds(values: dict[str, Any], when: dict[str, Any] | None) -> bool:
    for name, allowed in (when or {}).items():
        value = values.get(name)
        if isinstance(allowed, dict):
            if value is None or value in allowed["not"]:
                return False
        elif value not in allowed:
            return False
    return True


@dataclass
class Param:
    name: str  # flat name in the trial config: "hparams/lam" or "train/lr"
    type: str
    low: float | None = None
    high: float | None = None
    choices: list | None = None
    paper: Any = None
    when: dict[str, Any] | None = None

    @property
    def short(self) -> str:
        return self.name.split("/", 1)[1]

    def suggest(self, trial):
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        if self.type in ("int", "log_int"):
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.type == "log_int")
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.type == "log_float")

    def to_dict(self) -> dict[str, Any]:
        keys = ("choices",) if self.type == "categorical" else ("low", "high")
        out = {"type": self.type, **{k: getattr(self, k) for k in keys}, "paper": self.paper}
        if self.when:
            out["when"] = self.when
        return {**out, "enabled": True} if self.name.startswith("train/") else out


@dataclass
class SearchSpace:
    defense: str
    dataset: str
    params: list[Param]
    source: str

    def define_by_run(self, trial) -> None:
        """Optuna define-by-run: suggest every parameter whose ``when`` condition holds."""
        values: dict[str, Any] = {}
        for p in self.params:
            if condition_holds(values, p.when):
                values[p.short] = p.suggest(trial)

    def paper_point(self) -> dict[str, Any]:
        """The all-paper-values point (flat names), respecting conditions."""
        values: dict[str, Any] = {}
        point: dict[str, Any] = {}
        for p in self.params:
            if condition_holds(values, p.when):
                values[p.short] = point[p.name] = p.paper
        return point

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def to_yaml(self) -> str:
        """The effective space (shared block merged, start values resolved for the dataset), loadable
        again with ``--space``."""
        doc = {
            "defense": self.defense,
            "description": f"effective space for {self.dataset}, from {self.source}",
            "params": {p.short: p.to_dict() for p in self.params if p.name.startswith("hparams/")},
            "train": {p.short: p.to_dict() for p in self.params if p.name.startswith("train/")},
        }
        return yaml.safe_dump(doc, sort_keys=False)


TRAIN_DOMAINS = {
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "adv_eps": LINF_EPS,
    "adv_ratio": Float(0.0, 1.0, open_low=True),
    "adv_attack": OneOf(("none", *attacks.names(adversarial_training=True))),
}


def train_start_values(dataset: str) -> dict[str, Any]:
    """Start values of the shared training parameters: the code's defaults for ``dataset``."""
    cfg = TrainConfig(dataset=dataset)
    return {
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "adv_attack": "none",
        "adv_eps": data.info(dataset).objective_eps,
        "adv_ratio": ADV_TRAIN_DEFAULTS["ratio"],
    }


def _fail(source: str, key: str, message: str) -> NoReturn:
    raise UserError(f"{source}: {key if str(key).isprintable() else repr(key)}: {message}")


def _param(source: str, section: str, name: str, spec: Any, start: Any, domain: Domain) -> Param | None:
    key = f"{section}.{name}"
    if not isinstance(spec, dict):
        _fail(source, key, "expected a mapping with at least 'type'")
    unknown = sorted(set(spec) - PARAM_KEYS)
    if unknown:
        _fail(source, key, f"unknown key(s) {unknown}; valid: {sorted(PARAM_KEYS)}")
    if section == "train" and not spec.get("enabled", False):
        return None
    kind = spec.get("type")
    if kind not in TYPES:
        _fail(source, key, f"type must be one of {', '.join(TYPES)}, got {kind!r}")
    choices = spec.get("choices")
    if name == "adv_attack" and choices is None:
        choices = ["none", *attacks.names(adversarial_training=True)]
    p = Param(
        f"{'hparams' if section == 'params' else 'train'}/{name}",
        kind,
        spec.get("low"),
        spec.get("high"),
        choices,
        spec.get("paper", start),
        spec.get("when"),
    )
    values: list[Any]
    if kind == "categorical":
        if not isinstance(p.choices, list) or not p.choices:
            _fail(source, key, "a categorical parameter needs a non-empty 'choices' list")
        if p.paper is not None and p.paper not in p.choices:
            _fail(source, key, f"start value {p.paper!r} is not among the choices {p.choices}")
        values = p.choices
    else:
        low, high = p.low, p.high
        if (
            not (isinstance(low, (int, float)) and isinstance(high, (int, float)))
            or isinstance(low, bool)
            or isinstance(high, bool)
        ):
            _fail(source, key, "'low' and 'high' must be numbers")
        if low >= high:
            _fail(source, key, f"inverted range: low {low} must be below high {high}")
        if kind.startswith("log") and low <= 0:
            _fail(source, key, f"a log range needs a positive low bound, got {p.low}")
        if p.paper is not None and not domain.accepts(p.paper):
            _fail(source, key, f"start value {p.paper!r} is not what '{name}' takes: {domain.describe()}")
        if p.paper is not None and not low <= p.paper <= high:
            _fail(
                source,
                key,
                f"start value {p.paper} lies outside [{p.low}, {p.high}]; set 'paper:' or widen the "
                "range for this dataset",
            )
        values = [low, high]
    bad = [v for v in values if not domain.accepts(v)]
    if bad:
        _fail(source, key, f"{bad[0]!r} is outside what '{name}' takes: {domain.describe()}")
    if kind in ("int", "log_int") and not all(isinstance(v, int) for v in (p.low, p.high)):
        _fail(source, key, "an int parameter needs integer 'low' and 'high'")
    if kind in ("float", "log_float") and isinstance(domain, Int):
        _fail(source, key, f"'{name}' takes {domain.describe()}: use type int or log_int")
    if p.when is not None:
        ok = isinstance(p.when, dict) and all(
            isinstance(v, list) or (isinstance(v, dict) and set(v) == {"not"} and isinstance(v["not"], list))
            for v in p.when.values()
        )
        if not ok:
            _fail(source, key, "'when' must map a parameter name to a list of values or to {not: [values]}")
    return p


def _shared_train() -> dict[str, Any]:
    return yaml.safe_load(shipped(SHARED_TRAIN).read_text())


def parse(doc: Any, source: str, defense: str | None = None, dataset: str = "mnist") -> SearchSpace:
    if not isinstance(doc, dict):
        _fail(source, "(top)", "expected a mapping with 'defense' and 'params'")
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        _fail(source, unknown[0], f"unknown key; valid: {sorted(TOP_KEYS)}")
    name = doc.get("defense")
    if name not in defenses.names():
        _fail(source, "defense", f"unknown defense {name!r}; choose one of: {', '.join(defenses.names())}")
    if defense is not None and name != defense:
        _fail(source, "defense", f"this space is for '{name}', not '{defense}'")
    start = defenses.defaults(name, dataset)
    params: list[Param] = []
    for section in ("params", "train"):
        if not isinstance(doc.get(section) or {}, dict):
            _fail(source, section, "expected a mapping of parameter names to specs")
    for pname, spec in (doc.get("params") or {}).items():
        if pname not in start:
            _fail(
                source,
                f"params.{pname}",
                f"'{name}' has no such hyperparameter; valid: {', '.join(sorted(start)) or 'none'}",
            )
        param = _param(source, "params", pname, spec, start[pname], defenses.DEFENSES.get(name).domains[pname])
        if param is not None:  # a hyperparameter is always enabled; only training parameters can be off
            params.append(param)
    shared, train_start = _shared_train(), train_start_values(dataset)
    for pname in doc.get("train") or {}:
        if pname not in shared:
            _fail(source, f"train.{pname}", f"unknown training parameter; valid: {', '.join(sorted(shared))}")
    for pname, spec in shared.items():
        own = (doc.get("train") or {}).get(pname, {})
        merged = {**spec, **own} if isinstance(own, dict) else own
        p = _param(source, "train", pname, merged, train_start[pname], TRAIN_DOMAINS[pname])
        if p is not None:
            params.append(p)
    short = {p.short for p in params}
    for p in params:
        for dep in p.when or {}:
            if dep not in short:
                section = "params" if p.name.startswith("hparams/") else "train"
                _fail(source, f"{section}.{p.short}.when", f"refers to '{dep}', which is not an enabled parameter")
    return SearchSpace(name, dataset, params, source)


def load(defense: str, path: str | Path | None = None, dataset: str = "mnist") -> SearchSpace:
    """The space of ``defense`` searched on ``dataset``: ``path`` if given, else the shipped one."""
    defenses.DEFENSES.get(defense)
    if path:
        return parse(read_yaml(path, "search space file"), str(path), defense, dataset)
    ref = shipped(f"{defense}.yaml")
    return parse(yaml.safe_load(ref.read_text()), f"search_spaces/{defense}.yaml", defense, dataset)


def apply(sampled_train: dict[str, Any]) -> dict[str, Any]:
    """Turn a trial's sampled training parameters into TrainConfig fields (adv_* -> adv_train)."""
    train = dict(sampled_train)
    attack = train.pop("adv_attack", "none")
    adv = {k[4:]: train.pop(k) for k in ("adv_eps", "adv_ratio") if k in train}
    if attack and attack != "none":
        train["adv_train"] = {"attack": attack, **adv}
    return train
