"""Robust accuracy under the threat models the field trusts (the ``evaluate`` command's engine).

- white-box: the attack sees the whole ensemble (its log-mean-softmax output, exactly what predicts);
- black-box transfer: examples crafted on the cached surrogate (``surrogate.py``);
- member-to-member transferability: accuracy of each target member (and the ensemble) on examples
  crafted on each source member (and on the ensemble);
- ε curves: robust accuracy over the dataset's ε grid (its catalog entry) per attack.

Every evaluation runs the sanity pass of ``sanity.py`` unless told not to; with ``audit`` set it also
runs the audit suite (docs/audit.md) at every ε and flags any white-box attack that overstates
robustness against it (``proxy_inflated``). Flags: docs/flags.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import attacks, data, models
from ..attacks.audit import COMPONENTS as AUDIT_COMPONENTS
from ..attacks.audit import PRESETS as AUDIT_PRESETS
from ..attacks.losses import LOSS
from ..errors import UserError
from ..train import TrainConfig
from ..train.config import resolve_memory_format
from .intervals import CONFIDENCE, annotate, nested
from .points import ATTACK_BATCH, DEFAULT_N, accuracy, audit, craft, eval_subset, predict
from .sanity import proxy_inflation_flags, sanity_checks, sanity_flags
from .surrogate import Surrogate, config_key, surrogate_config, without_new_fields

PROGRESS_BATCH = 100  # smaller batches when a progress bar is shown, so it moves


class MemberModel(nn.Module):
    """One member as a model of its own: [0, 1] images -> log-probabilities."""

    def __init__(self, member: nn.Module):
        super().__init__()
        self.member = member

    def forward(self, x):
        return torch.log_softmax(self.member(x), dim=-1)


def transfer_matrix(
    ens: models.Ensemble,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str,
    eps: float,
    options: dict | None = None,
    progress=None,
) -> dict[str, Any]:
    """``acc[s][t]``: accuracy of target t on examples crafted on source s; sources and targets are the
    members ``m0..m{M-1}`` and the ``ensemble``. The diagonal is each member's white-box accuracy."""
    names = [f"m{i}" for i in range(ens.n_members)] + ["ensemble"]
    sources = [MemberModel(m) for m in ens.members] + [ens]
    matrix = []
    for src in sources:
        x_adv = craft(attack, src, x, y, eps, options, progress=progress)
        matrix.append([accuracy(t, x_adv, y) for t in sources])
    return {"names": names, "acc": matrix, "attack": attack, "eps": eps}


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
    surrogate_epochs: int | None = None  # None: the evaluated model's own routine (its file records it)
    surrogate_seed: int | None = None  # default: target seed + 1000
    surrogate_subset: int | None = None
    surrogate_config: dict[str, Any] | None = None  # a TrainConfig dict used as is (one surrogate for a table)
    data_dir: str | None = None
    audit: str | None = None  # None, or the audit preset (fast | standard): docs/audit.md
    # black-box "worst of versions": more surrogates (TrainConfig dicts) beside the main one; a point is
    # robust only if it survives every attack crafted on every surrogate with every loss of ``version_losses``
    version_surrogates: list[dict[str, Any]] | None = None
    version_losses: tuple[str, ...] = ("ce", "cw")

    def cache_doc(self) -> dict[str, Any]:
        """What identifies this evaluation's result: every field but ``data_dir``; the version fields
        only when used, so results cached before they existed keep their key."""
        doc = {k: v for k, v in vars(self).items() if k != "data_dir"}
        if self.surrogate_config is not None:
            doc["surrogate_config"] = without_new_fields(self.surrogate_config)
        if self.version_surrogates is None:
            doc.pop("version_surrogates")
            doc.pop("version_losses")
        else:
            doc["version_surrogates"] = [without_new_fields(c) for c in self.version_surrogates]
        if versions := attacks.defaults_versions(self.attacks):
            doc["attack_defaults"] = versions
        return doc

    def __post_init__(self):
        for a in self.attacks:
            attacks.ATTACKS.get(a)  # unknown -> UserError naming the choices
        if not self.eps or any((not math.isfinite(e)) or e < 0 for e in self.eps):
            raise UserError(f"eps must be a non-empty list of numbers >= 0, got {self.eps}")
        if self.version_surrogates is not None:
            if not self.black_box:
                raise UserError("version_surrogates need the black-box threat model (black_box=True)")
            for loss in self.version_losses:
                if not LOSS.accepts(loss):
                    raise UserError(f"unknown version loss {loss!r}; choose from {LOSS.describe()}")
        if self.audit is not None and self.audit not in AUDIT_PRESETS:
            raise UserError(f"unknown audit preset '{self.audit}'; choose one of: {', '.join(AUDIT_PRESETS)}")


def evaluate(
    ens: models.Ensemble,
    spec: EvalSpec,
    progress: Callable[[str, int, int], None] | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Everything the spec asks for, as the documented JSON-able dict (see README, Evaluation)."""
    started = time.perf_counter()
    # channels-last on CPU, as in training: input gradients (every attack step) are faster there
    fmt = resolve_memory_format("auto", next(ens.parameters()).device)
    ens = ens.eval().to(memory_format=fmt)  # type: ignore[call-overload]  # documented; not in the stubs
    x, y = eval_subset(spec.dataset, spec.split, spec.n, spec.seed, spec.data_dir)
    subset_key = f"{spec.dataset}/{spec.split}/n={spec.n}/seed={spec.seed}"

    def bar(label: str, total: int = len(x)):
        done = [0]
        if progress:
            progress(label, 0, total)  # the bar starts with the work, so its rate is the work's

        def step(k: int):
            done[0] += k
            if progress:
                progress(label, done[0], total)

        return step

    opts = {a: dict(spec.attack_options.get(a, {})) for a in spec.attacks}
    settings = {a: attacks.get(a).options(max(spec.eps), **opts[a]) for a in spec.attacks}
    result: dict[str, Any] = {
        "dataset": spec.dataset,
        "split": spec.split,
        "n": len(y),
        "subset_seed": spec.seed,
        "forward_passes_per_prediction": ens.n_members,
        "clean_acc": accuracy(ens, x, y),
        "attacks": {
            a: {"source": attacks.ATTACKS.get(a).source, "norm": attacks.ATTACKS.get(a).norm, "options": settings[a]}
            for a in spec.attacks
        },
        "threat_models": {},
    }
    white: dict[str, dict[str, float]] = {}
    eps_list = sorted(set(spec.eps) | (set(data.info(spec.dataset).eps_grid) if spec.curves else set()))
    for a in spec.attacks if spec.white_box or spec.curves else []:
        white[a] = {}
        for eps in eps_list if spec.curves else spec.eps:
            x_adv = craft(
                a,
                ens,
                x,
                y,
                eps,
                opts[a],
                progress=bar(f"white-box {a} eps={eps}"),
                batch=PROGRESS_BATCH if progress else ATTACK_BATCH,
            )
            white[a][str(eps)] = accuracy(ens, x_adv, y)
    if spec.white_box:
        result["threat_models"]["white_box"] = {a: {e: white[a][e] for e in map(str, spec.eps)} for a in white}
    if spec.curves:
        result["curves"] = {a: {"eps": eps_list, "acc": [white[a][str(e)] for e in eps_list]} for a in white}

    black: dict[str, dict[str, float]] | None = None
    if spec.black_box:
        seed = spec.surrogate_seed if spec.surrogate_seed is not None else spec.seed + 1000
        if spec.surrogate_config is not None:
            sur_cfg = TrainConfig.from_dict({**spec.surrogate_config, "data_dir": spec.data_dir})
        else:
            if ens.train_config is None and spec.surrogate_epochs is None:
                log(
                    f"the model file records no training routine: the surrogate trains {spec.dataset}'s paper "
                    f"routine ({data.info(spec.dataset).epochs} epochs); pass --surrogate-epochs to change it"
                )
            sur_cfg = surrogate_config(
                ens.config,
                spec.dataset,
                spec.surrogate_epochs,
                seed,
                spec.surrogate_subset,
                spec.data_dir,
                routine=ens.train_config,
            )
        sur = Surrogate(sur_cfg)
        sur_model = sur.model(log)
        black = {}
        cached = 0
        for a in spec.attacks:
            black[a] = {}
            for eps in spec.eps:
                x_adv, hit = sur.adversarial(a, eps, opts[a], subset_key, x, y, bar(f"black-box {a} eps={eps}"))
                cached += hit
                black[a][str(eps)] = accuracy(ens, x_adv, y)
        result["threat_models"]["black_box"] = {
            "surrogate": {
                "key": config_key(sur.cfg),
                "path": str(sur.folder),
                "config": sur.cfg.to_dict(),
                "clean_acc": accuracy(sur_model, x, y),
                "trained_now": sur.trained_now,
            },
            "cached_attacks": cached,
            "acc": black,
        }
        if spec.version_surrogates is not None:
            surs = [sur] + [
                Surrogate(TrainConfig.from_dict({**c, "data_dir": spec.data_dir})) for c in spec.version_surrogates
            ]
            result["threat_models"]["black_box_versions"] = worst_of_versions(
                ens, surs, spec, opts, subset_key, x, y, bar, log
            )
    if spec.transfer:
        a = spec.attacks[0]
        result["threat_models"]["transfer_matrix"] = transfer_matrix(
            ens, x, y, a, spec.eps[0], opts[a], progress=bar(f"transfer {a}", len(x) * (ens.n_members + 1))
        )
    if spec.audit:
        result["audit"] = {"preset": spec.audit, "robust_acc": {}, "per_attack": {}}
        for eps in spec.eps:
            report = audit(
                ens,
                x,
                y,
                eps,
                spec.audit,
                progress=bar(f"audit ({spec.audit}) eps={eps}", len(x) * len(AUDIT_COMPONENTS)),
            )
            result["audit"]["robust_acc"][str(eps)] = report.robust_acc
            result["audit"]["per_attack"][str(eps)] = report.per_attack
        result["audit"]["options"] = report.options
    flags: list[dict[str, Any]] = []
    if spec.sanity:
        positive = [e for e in spec.eps if e > 0]
        result["sanity"] = sanity_checks(
            ens, x, y, min(positive) if positive else data.info(spec.dataset).objective_eps
        )
        flags = sanity_flags(result["sanity"], white, black)
    if spec.audit and spec.white_box:
        flags += proxy_inflation_flags(result["threat_models"]["white_box"], result["audit"]["robust_acc"])
    result["flags"] = flags
    result.update(intervals(result))
    result["seconds"] = time.perf_counter() - started
    return result


def worst_of_versions(
    ens: models.Ensemble,
    surrogates: list[Surrogate],
    spec: EvalSpec,
    opts: dict[str, dict[str, Any]],
    subset_key: str,
    x: torch.Tensor,
    y: torch.Tensor,
    bar: Callable[..., Callable[[int], None]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Per attack with a ``loss`` option and ε: the fraction of points the ensemble classifies correctly
    on every version (each surrogate × each loss of ``spec.version_losses``), as the CLDL authors' code
    scores black-box robustness. Each version's examples are cached on its surrogate."""
    described = []
    for sur in surrogates:
        sur.model(log)  # trains (once, cached) before any attack, and says so
        described.append({"key": config_key(sur.cfg), "n_members": sur.cfg.n_members, "seed": sur.cfg.seed})
    acc: dict[str, dict[str, float]] = {}
    for a in spec.attacks:
        if "loss" not in attacks.get(a).defaults:  # e.g. pgd_cw: already one loss's version
            continue
        acc[a] = {}
        for eps in spec.eps:
            alive = torch.ones(len(y), dtype=torch.bool)
            for sur in surrogates:
                for loss in spec.version_losses:
                    options = opts[a] if loss == opts[a].get("loss", "ce") else {**opts[a], "loss": loss}
                    x_adv, _ = sur.adversarial(a, eps, options, subset_key, x, y, bar(f"versions {a} eps={eps}"))
                    alive &= predict(ens, x_adv) == y
            acc[a][str(eps)] = float(alive.float().mean())
    return {
        "surrogates": described,
        "losses": list(spec.version_losses),
        "versions": len(described) * len(spec.version_losses),
        "acc": acc,
    }


def intervals(result: dict[str, Any]) -> dict[str, Any]:
    """Every accuracy of an evaluation with its 95% Wilson interval on the result's ``n`` points:
    ``clean_acc_n``, ``clean_acc_ci_low``, ``clean_acc_ci_high`` beside the clean accuracy, and an
    ``intervals`` block that mirrors the robust accuracies' nesting with ``[low, high]`` leaves."""
    n = int(result["n"])
    tm = result["threat_models"]
    block: dict[str, Any] = {"method": "wilson", "confidence": CONFIDENCE, "n": n}
    if "white_box" in tm:
        block["white_box"] = nested(tm["white_box"], n)
    if "black_box" in tm:
        block["black_box"] = nested(tm["black_box"]["acc"], n)
    if "black_box_versions" in tm:
        block["black_box_versions"] = nested(tm["black_box_versions"]["acc"], n)
    if "audit" in result:
        block["audit"] = nested(result["audit"]["robust_acc"], n)
    return {**annotate({"clean_acc": result["clean_acc"]}, {"clean_acc": n}), "intervals": block}
