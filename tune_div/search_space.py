"""Search spaces (``search_spaces/<defense>.yaml``): load, validate, and sample them with Optuna.

```yaml
defense: smd
params:                      # the defense's hyperparameters (names as in the paper / the defense)
  lam: {type: log_float, low: 0.01, high: 100.0, paper: 1.0}
train:                       # shared training parameters; each is off unless `enabled: true`
  lr: {type: log_float, low: 1.0e-4, high: 1.0e-2, paper: 1.0e-3, enabled: false}
  adv_attack: {type: categorical, choices: [none, fgsm, pgd], paper: none, enabled: false}
  adv_eps: {type: float, low: 0.05, high: 0.3, paper: 0.1, when: {adv_attack: [fgsm, pgd]}, enabled: false}
```

Types: ``float``, ``log_float``, ``int``, ``log_int``, ``categorical``. ``paper`` is the paper's value:
the search evaluates the all-paper point first, as a known reference. ``when`` makes a parameter exist
only while another has one of the listed values. Errors name the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import defenses
from .errors import UserError, read_yaml

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
TYPES = ("float", "log_float", "int", "log_int", "categorical")
PARAM_KEYS = {"type", "low", "high", "choices", "paper", "when", "enabled", "step"}
TRAIN_PARAMS = {"lr", "weight_decay", "adv_attack", "adv_eps", "adv_ratio"}
TOP_KEYS = {"defense", "params", "train", "description"}


@dataclass
class Param:
    name: str  # flat name in the trial config: "hparams/lam" or "train/lr"
    type: str
    low: float | None = None
    high: float | None = None
    choices: list | None = None
    paper: Any = None
    when: dict[str, list] | None = None

    def suggest(self, trial):
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        if self.type in ("int", "log_int"):
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.type == "log_int")
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.type == "log_float")


@dataclass
class SearchSpace:
    defense: str
    params: list[Param]
    source: str

    def define_by_run(self, trial) -> None:
        """Optuna define-by-run: suggest every parameter whose ``when`` condition holds."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.when and not all(values.get(self._flat(k)) in v for k, v in p.when.items()):
                continue
            values[p.name] = p.suggest(trial)

    def _flat(self, short: str) -> str:
        for p in self.params:
            if p.name.split("/", 1)[1] == short:
                return p.name
        return short

    def paper_point(self) -> dict[str, Any]:
        """The all-paper-values point (flat names), respecting conditions."""
        point: dict[str, Any] = {}
        for p in self.params:
            if p.when and not all(point.get(self._flat(k)) in v for k, v in p.when.items()):
                continue
            point[p.name] = p.paper
        return point

    def names(self) -> list[str]:
        return [p.name for p in self.params]


def _fail(source: str, key: str, message: str) -> None:
    raise UserError(f"{source}: {key}: {message}")


def _param(source: str, section: str, name: str, spec: Any) -> Param | None:
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
    p = Param(f"{'hparams' if section == 'params' else 'train'}/{name}", kind, spec.get("low"), spec.get("high"),
              spec.get("choices"), spec.get("paper"), spec.get("when"))
    if kind == "categorical":
        if not isinstance(p.choices, list) or not p.choices:
            _fail(source, key, "a categorical parameter needs a non-empty 'choices' list")
        if p.paper is not None and p.paper not in p.choices:
            _fail(source, key, f"paper value {p.paper!r} is not among the choices {p.choices}")
    else:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (p.low, p.high)):
            _fail(source, key, "'low' and 'high' must be numbers")
        if p.low >= p.high:
            _fail(source, key, f"inverted range: low {p.low} must be below high {p.high}")
        if kind.startswith("log") and p.low <= 0:
            _fail(source, key, f"a log range needs a positive low bound, got {p.low}")
        if p.paper is not None and not p.low <= p.paper <= p.high:
            _fail(source, key, f"paper value {p.paper} lies outside [{p.low}, {p.high}]")
    if p.when is not None:
        if not isinstance(p.when, dict) or not all(isinstance(v, list) for v in p.when.values()):
            _fail(source, key, "'when' must map a parameter name to a list of values")
    return p


def parse(doc: Any, source: str, defense: str | None = None) -> SearchSpace:
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
    valid = defenses.defaults(name)
    params: list[Param] = []
    for pname, spec in (doc.get("params") or {}).items():
        if pname not in valid:
            _fail(source, f"params.{pname}", f"'{name}' has no such hyperparameter; valid: {', '.join(sorted(valid)) or 'none'}")
        params.append(_param(source, "params", pname, spec))
    for pname, spec in (doc.get("train") or {}).items():
        if pname not in TRAIN_PARAMS:
            _fail(source, f"train.{pname}", f"unknown training parameter; valid: {', '.join(sorted(TRAIN_PARAMS))}")
        p = _param(source, "train", pname, spec)
        if p is not None:
            params.append(p)
    short = {p.name.split("/", 1)[1] for p in params}
    for p in params:
        for dep in (p.when or {}):
            if dep not in short:
                section = "params" if p.name.startswith("hparams/") else "train"
                _fail(source, f"{section}.{p.name.split('/', 1)[1]}.when",
                      f"refers to '{dep}', which is not an enabled parameter")
    return SearchSpace(name, params, source)


def load(defense: str, path: str | Path | None = None) -> SearchSpace:
    """The space of ``defense``: ``path`` if given, else ``search_spaces/<defense>.yaml``."""
    defenses.DEFENSES.get(defense)
    path = Path(path) if path else SPACES_DIR / f"{defense}.yaml"
    return parse(read_yaml(path, "search space file"), str(path), defense)


def apply(config: dict[str, Any]) -> dict[str, Any]:
    """Turn a trial config's sampled ``train`` entries into TrainConfig fields (adv_* -> adv_train)."""
    train = dict(config.get("train") or {})
    attack = train.pop("adv_attack", "none")
    adv = {k[4:]: train.pop(k) for k in ("adv_eps", "adv_ratio") if k in train}
    if attack and attack != "none":
        train["adv_train"] = {"attack": attack, **adv}
    return train
