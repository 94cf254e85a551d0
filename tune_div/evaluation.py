"""Robust accuracy under the threat models the field trusts, with gradient-masking sanity flags.

- white-box: the attack sees the whole ensemble (its log-mean-softmax output, exactly what predicts);
- black-box transfer: examples crafted on a surrogate ensemble (naive, same architecture and member
  count, another seed), trained once and cached on disk under a key of its full config; its adversarial
  examples are cached per (attack, ε, options, subset), so a later evaluation costs only inference;
- member-to-member transferability: accuracy of each target member (and the ensemble) on examples
  crafted on each source member (and on the ensemble);
- ε curves: robust accuracy over an ε grid per attack.

Subset policy: a fixed, seeded subset of ``n`` points of a split (``n=None`` means all of it), never
filtered to correctly classified points: every number is plain robust accuracy. Flags: docs/flags.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import attacks, data, models
from .training import TrainConfig, Trainer

FLAGS_DOC = "docs/flags.md"
DEFAULT_N = 1000
ATTACK_BATCH = 500

# Thresholds of the sanity flags (docs/flags.md explains each).
TOL = 0.02  # accuracy differences below 2 points are noise on 1000 points
LARGE_EPS = 1.0  # at ε = 1 (L∞, [0, 1] images) an attacker can draw any image at all
LARGE_EPS_MAX_ACC = 0.10
VANISHING_GRAD = 1e-10  # L∞ norm of the input gradient of the log-probability margin
VANISHING_SHARE = 0.20

SINGLE_STEP_OF = {"pgd": "fgsm", "bim": "fgsm", "mim": "fgsm", "apgd_ce": "fgsm", "pgd_cw": "fgsm"}


# --- data subsets -----------------------------------------------------------------------------------

def eval_subset(dataset: str, split: str, n: int | None = DEFAULT_N, seed: int = 0,
                root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of ``n`` points of ``split`` as float [0, 1] images and labels."""
    if n is not None and n <= 0:
        raise ValueError(f"n must be a positive number of points or 'all', got {n}")
    images, labels = data.load(dataset, split, root, subset=n, seed=seed)
    return data.to_float(images), labels


# --- accuracy helpers -------------------------------------------------------------------------------

class MemberModel(nn.Module):
    """One member as a model of its own: [0, 1] images -> log-probabilities."""

    def __init__(self, member: nn.Module):
        super().__init__()
        self.member = member

    def forward(self, x):
        return torch.log_softmax(self.member(x), dim=-1)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    was = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    model.train(was)
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) == y).float().mean())


def craft(attack: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
          options: dict | None = None, batch: int = ATTACK_BATCH, progress: Callable[[int], None] | None = None
          ) -> torch.Tensor:
    """Adversarial examples of ``x`` against ``model``, in batches."""
    atk = attacks.get(attack)
    out = []
    for i in range(0, len(x), batch):
        out.append(atk(model, x[i:i + batch], y[i:i + batch], eps, **(options or {})))
        if progress:
            progress(len(out[-1]))
    return torch.cat(out) if out else x.clone()


# --- the surrogate for black-box transfer -----------------------------------------------------------

def surrogate_config(target_config: dict[str, Any], dataset: str, epochs: int, seed: int,
                     subset: int | None = None, data_dir: str | None = None) -> TrainConfig:
    """A naive ensemble with the target's architecture and member count, trained with another seed."""
    return TrainConfig(defense="naive", dataset=dataset, arch=target_config["arch"],
                       n_members=int(target_config["n_members"]), epochs=epochs, seed=seed, subset=subset,
                       activation=target_config.get("activation"), data_dir=data_dir)


def config_key(cfg: TrainConfig) -> str:
    d = cfg.to_dict()
    d.pop("data_dir")  # where the files are does not change the model
    d.pop("device")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def surrogate_cache_dir() -> Path:
    return Path(os.environ.get("TUNE_DIV_CACHE", Path.home() / ".cache" / "tune_div")) / "surrogates"


@dataclass
class Surrogate:
    """A cached naive surrogate ensemble and its cached adversarial examples."""

    cfg: TrainConfig
    root: Path = field(default_factory=surrogate_cache_dir)
    trained_now: bool = False
    _model: models.Ensemble | None = field(default=None, repr=False)

    @property
    def folder(self) -> Path:
        return self.root / config_key(self.cfg)

    def model(self, log: Callable[[str], None] = lambda s: None) -> models.Ensemble:
        if self._model is None:
            self._model = self._load_or_train(log).eval()
        return self._model

    def _load_or_train(self, log: Callable[[str], None]) -> models.Ensemble:
        path = self.folder / "model.pt"
        if path.is_file():
            return models.load_ensemble(path)
        log(f"training the black-box surrogate once ({self.cfg.n_members} x {self.cfg.arch}, naive, seed "
            f"{self.cfg.seed}, {self.cfg.epochs} epochs); cached in {self.folder}")
        trainer = Trainer(self.cfg)
        trainer.fit()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        models.save_ensemble(trainer.ensemble.cpu(), tmp)
        os.replace(tmp, path)
        (self.folder / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        self.trained_now = True
        return models.load_ensemble(path)

    def adversarial(self, attack: str, eps: float, options: dict, subset_key: str, x: torch.Tensor,
                    y: torch.Tensor, progress=None) -> tuple[torch.Tensor, bool]:
        """Examples crafted on the surrogate, from the cache when present; returns (x_adv, from_cache)."""
        key = hashlib.sha256(json.dumps([attack, eps, options, subset_key], sort_keys=True).encode()).hexdigest()[:16]
        path = self.folder / "adv" / f"{attack}_{key}.pt"
        if path.is_file():
            blob = torch.load(path, weights_only=True)
            if torch.equal(blob["y"], y) and blob["x_adv"].shape == x.shape:
                return blob["x_adv"], True
        x_adv = craft(attack, self.model(), x, y, eps, options, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"x_adv": x_adv, "y": y}, tmp)
        os.replace(tmp, path)
        return x_adv, False


# --- threat models ----------------------------------------------------------------------------------

def transfer_matrix(ens: models.Ensemble, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float,
                    options: dict | None = None, progress=None) -> dict[str, Any]:
    """``acc[s][t]``: accuracy of target t on examples crafted on source s; sources and targets are the
    members ``m0..m{M-1}`` and the ``ensemble``. The diagonal is each member's white-box accuracy."""
    names = [f"m{i}" for i in range(ens.n_members)] + ["ensemble"]
    sources = [MemberModel(m) for m in ens.members] + [ens]
    matrix = []
    for src in sources:
        x_adv = craft(attack, src, x, y, eps, options, progress=progress)
        matrix.append([accuracy(t, x_adv, y) for t in sources])
    return {"names": names, "acc": matrix, "attack": attack, "eps": eps}


def vanishing_gradient_share(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of points whose input gradient of the log-probability margin max_{j≠y} log p_j − log p_y
    has an L∞ norm below VANISHING_GRAD (a margin in log space does not saturate like cross-entropy)."""
    was = model.training
    model.eval()
    shares = []
    for i in range(0, len(x), ATTACK_BATCH):
        xb = x[i:i + ATTACK_BATCH].clone().requires_grad_(True)
        yb = y[i:i + ATTACK_BATCH]
        with torch.enable_grad():
            logp = model(xb)
            true = logp.gather(1, yb[:, None]).squeeze(1)
            other = logp.masked_fill(nn.functional.one_hot(yb, logp.shape[1]).bool(), float("-inf")).amax(1)
            (g,) = torch.autograd.grad((other - true).sum(), xb)
        shares.append((g.flatten(1).abs().amax(1) < VANISHING_GRAD).float())
    model.train(was)
    return float(torch.cat(shares).mean())


SANITY_N = 200


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    """The numbers behind the flags, on the first SANITY_N points: FGSM and PGD at ``eps``, PGD at
    ``eps/2`` and at LARGE_EPS, and the share of vanishing input gradients."""
    x, y = x[:SANITY_N], y[:SANITY_N]
    pgd = {e: accuracy(model, craft("pgd", model, x, y, e, {"steps": 20 if e == LARGE_EPS else 10}), y)
           for e in (eps / 2, eps, LARGE_EPS)}
    return {"n": len(y), "eps": eps, "fgsm_acc": accuracy(model, craft("fgsm", model, x, y, eps), y),
            "pgd_acc": pgd[eps], "pgd_curve": {str(e): a for e, a in sorted(pgd.items())},
            "large_eps": LARGE_EPS, "large_eps_pgd_acc": pgd[LARGE_EPS],
            "vanishing_gradient_share": vanishing_gradient_share(model, x, y),
            "thresholds": {"tolerance": TOL, "large_eps_max_acc": LARGE_EPS_MAX_ACC,
                           "vanishing_grad": VANISHING_GRAD, "vanishing_share": VANISHING_SHARE}}


def sanity_flags(checks: dict[str, Any], white: dict[str, dict[str, float]] | None = None,
                 black: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """The gradient-masking flags (docs/flags.md), from :func:`sanity_checks` and, where given, the
    white-box and black-box accuracies ``{attack: {str(eps): acc}}`` of an evaluation."""
    flags: list[dict[str, Any]] = []

    def flag(name: str, message: str, **numbers):
        flags.append({"name": name, "message": message, "doc": f"{FLAGS_DOC}#{name}", **numbers})

    pairs = [("pgd", "fgsm", str(checks["eps"]), checks["pgd_acc"], checks["fgsm_acc"])]
    curves = {"pgd (sanity)": checks["pgd_curve"]}
    for attack, per_eps in (white or {}).items():
        single = SINGLE_STEP_OF.get(attack)
        if single and single in white:
            pairs += [(attack, single, e, a, white[single][e]) for e, a in per_eps.items() if e in white[single]]
        curves[attack] = per_eps
    for attack, single, eps, acc, ref in pairs:
        if acc > ref + TOL:
            flag("iterative_weaker_than_single_step",
                 f"{attack} leaves {acc:.3f} at eps={eps} but one-step {single} leaves {ref:.3f}",
                 attack=attack, eps=float(eps), acc=acc, single_step_acc=ref)
    for attack, per_eps in (white or {}).items():
        for eps, acc in per_eps.items():
            ref = (black or {}).get(attack, {}).get(eps)
            if ref is not None and acc > ref + TOL:
                flag("white_box_weaker_than_transfer",
                     f"white-box {attack} leaves {acc:.3f} at eps={eps} but transfer leaves {ref:.3f}",
                     attack=attack, eps=float(eps), acc=acc, transfer_acc=ref)
    for attack, per_eps in curves.items():
        ordered = sorted(per_eps.items(), key=lambda kv: float(kv[0]))
        for (e1, a1), (e2, a2) in zip(ordered, ordered[1:]):
            if a2 > a1 + TOL:
                flag("accuracy_increases_with_eps",
                     f"{attack}: accuracy rises from {a1:.3f} at eps={e1} to {a2:.3f} at eps={e2}",
                     attack=attack, eps=float(e2), acc=a2, previous_acc=a1)
    if checks["large_eps_pgd_acc"] > LARGE_EPS_MAX_ACC:
        flag("not_zero_at_large_eps",
             f"PGD at eps={LARGE_EPS} (any image reachable) still leaves {checks['large_eps_pgd_acc']:.3f} accuracy",
             eps=LARGE_EPS, acc=checks["large_eps_pgd_acc"])
    if checks["vanishing_gradient_share"] > VANISHING_SHARE:
        flag("vanishing_input_gradients",
             f"input gradients vanish for {checks['vanishing_gradient_share']:.0%} of the points",
             share=checks["vanishing_gradient_share"])
    return flags


def dataset_eps_grid(dataset: str) -> list[float]:
    """The papers' ε grid for curves: MNIST-like 0.05…0.30, CIFAR 0.01…0.04 and 8/255."""
    if dataset in ("mnist", "fashion_mnist"):
        return [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    return [0.01, 0.02, 0.03, 0.04, round(8 / 255, 6)]


@dataclass
class EvalSpec:
    dataset: str
    attacks: list[str]
    eps: list[float]
    split: str = "test"
    n: int | None = DEFAULT_N
    seed: int = 0
    white_box: bool = True
    black_box: bool = False
    transfer: bool = False
    curves: bool = False
    sanity: bool = True
    attack_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    surrogate_epochs: int = 5
    surrogate_seed: int | None = None  # default: target seed + 1000
    surrogate_subset: int | None = None
    data_dir: str | None = None

    def __post_init__(self):
        for a in self.attacks:
            attacks.ATTACKS.get(a)  # unknown -> ValueError naming the choices
        if not self.eps or any((not math.isfinite(e)) or e < 0 for e in self.eps):
            raise ValueError(f"eps must be a non-empty list of numbers >= 0, got {self.eps}")


def evaluate(ens: models.Ensemble, spec: EvalSpec, progress: Callable[[str, int, int], None] | None = None,
             log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Everything the spec asks for, as the documented JSON-able dict (see README, Evaluation)."""
    started = time.perf_counter()
    ens = ens.eval()
    x, y = eval_subset(spec.dataset, spec.split, spec.n, spec.seed, spec.data_dir)
    subset_key = f"{spec.dataset}/{spec.split}/n={spec.n}/seed={spec.seed}"

    def bar(label: str):
        total = len(x)
        done = [0]

        def step(k: int):
            done[0] += k
            if progress:
                progress(label, done[0], total)
        return step

    opts = {a: dict(spec.attack_options.get(a, {})) for a in spec.attacks}
    settings = {a: attacks.get(a).options(max(spec.eps), **opts[a]) for a in spec.attacks}
    result: dict[str, Any] = {
        "dataset": spec.dataset, "split": spec.split, "n": len(y), "subset_seed": spec.seed,
        "forward_passes_per_prediction": ens.n_members, "clean_acc": accuracy(ens, x, y),
        "attacks": {a: {"source": attacks.ATTACKS.get(a).source, "norm": attacks.ATTACKS.get(a).norm,
                        "options": settings[a]} for a in spec.attacks},
        "threat_models": {},
    }
    white: dict[str, dict[str, float]] = {}
    eps_list = sorted(set(spec.eps) | (set(dataset_eps_grid(spec.dataset)) if spec.curves else set()))
    for a in spec.attacks if spec.white_box or spec.curves else []:
        white[a] = {}
        for eps in (eps_list if spec.curves else spec.eps):
            x_adv = craft(a, ens, x, y, eps, opts[a], progress=bar(f"white-box {a} eps={eps}"))
            white[a][str(eps)] = accuracy(ens, x_adv, y)
    if spec.white_box:
        result["threat_models"]["white_box"] = {a: {e: white[a][e] for e in map(str, spec.eps)} for a in white}
    if spec.curves:
        result["curves"] = {a: {"eps": eps_list, "acc": [white[a][str(e)] for e in eps_list]} for a in white}

    black = None
    if spec.black_box:
        seed = spec.surrogate_seed if spec.surrogate_seed is not None else spec.seed + 1000
        sur = Surrogate(surrogate_config(ens.config, spec.dataset, spec.surrogate_epochs, seed,
                                         spec.surrogate_subset, spec.data_dir))
        sur_model = sur.model(log)
        black, cached = {}, 0
        for a in spec.attacks:
            black[a] = {}
            for eps in spec.eps:
                x_adv, hit = sur.adversarial(a, eps, opts[a], subset_key, x, y, bar(f"black-box {a} eps={eps}"))
                cached += hit
                black[a][str(eps)] = accuracy(ens, x_adv, y)
        result["threat_models"]["black_box"] = {
            "surrogate": {"key": config_key(sur.cfg), "path": str(sur.folder), "config": sur.cfg.to_dict(),
                          "clean_acc": accuracy(sur_model, x, y), "trained_now": sur.trained_now},
            "cached_attacks": cached, "acc": black}
    if spec.transfer:
        a = spec.attacks[0]
        result["threat_models"]["transfer_matrix"] = transfer_matrix(ens, x, y, a, spec.eps[0], opts[a],
                                                                     progress=bar(f"transfer {a}"))
    flags: list[dict[str, Any]] = []
    if spec.sanity:
        result["sanity"] = sanity_checks(ens, x, y, min(e for e in spec.eps if e > 0) if any(spec.eps) else 0.1)
        flags = sanity_flags(result["sanity"], white, black)
    result["flags"] = flags
    result["seconds"] = time.perf_counter() - started
    return result
