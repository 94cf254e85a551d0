"""The training configuration: one dataclass, the papers' defaults, validated where it is built.

Defaults (SMD / ADP / CLDL papers): Adam, lr 1e-3, weight decay 1e-4, batch 128; the architecture,
epochs and LR milestones of the dataset come from its catalog entry (``tune_div.data.info``) when the
config leaves them unset (``None``): 50 epochs on MNIST-like data, 200 on CIFAR.

Two LR schedules: ``multistep`` (×``lr_gamma`` at ``milestones``, the SMD setup) and ``plateau``
(×``plateau_factor`` when the validation loss has not improved for ``plateau_patience`` epochs, the
D-ReLU setup, Keras' ReduceLROnPlateau). ``early_stop_patience`` stops training when the validation loss
has not improved for that many epochs (Keras' EarlyStopping; ``epochs`` is then the cap). The
validation loss they watch (``monitor``) is the ensemble's NLL on the validation split, measured every
epoch; ``monitor="loss"`` adds the defense's penalty on its parameters (``Defense.penalty``, D-ReLU's
λ·Σ m²), as Keras' ``val_loss`` counts a model's regularisation losses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from .. import attacks, data, defenses, models
from ..domains import (
    COUNT,
    LINF_EPS,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    Bool,
    Domain,
    Float,
    Int,
    ListOf,
    Maybe,
    OneOf,
    Text,
    check,
    sorted_unique,
)
from ..errors import UserError
from ..models.base import ACTIVATIONS
from .precision import CHOICES as PRECISION_CHOICES

# Adversarial training defaults: PGD-10 with half of every batch replaced; eps None = the dataset's
# objective eps (its catalog entry).
ADV_TRAIN_DEFAULTS = {"attack": "pgd", "eps": None, "steps": 10, "ratio": 0.5}
# Ensemble adversarial training (Tramèr et al. 2018, as GAL combines it with its loss): ``source`` names a
# static pre-trained model file (``models.save_ensemble``) the examples are crafted on instead of the
# ensemble being trained; ``random_eps`` draws each batch's ε from a normal of std ε/2 truncated to
# [0, ε] (Kurakin et al. 2016). ``retrain_epochs`` R: train naturally first (``epochs`` and early stopping
# bound that phase), then retrain R epochs on adversarial examples with the learning rate natural training
# left, no schedule and no early stopping (the D-ReLU paper's AT, Sec. 6.1). Kept in a config only when
# set, so existing configs keep their keys.
ADV_TRAIN_OPTIONAL = {"source": None, "random_eps": False, "retrain_epochs": None}
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
SCHEDULES = ("multistep", "plateau")
MONITORS = ("nll", "loss")  # what the plateau schedule and early stopping watch (the module docstring)


class _Mapping(Domain):
    def accepts(self, value):
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)

    def describe(self):
        return "a mapping of names to values"


# The training routine (everything but the model, the defense and the seed): what a black-box surrogate
# copies from the model it attacks ("trained with the same training routine", SMD paper Sec. 4.2).
ROUTINE = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "milestones",
    "lr_gamma",
    "schedule",
    "plateau_factor",
    "plateau_patience",
    "early_stop_patience",
    "subset",
    "val_size",
    "augment",
)

# Fields that do not change what is trained: a checkpoint may be resumed across them.
NOT_IDENTITY = ("epochs", "data_dir", "device", "memory_format", "num_threads", "execution", "precision")


@dataclass
class TrainConfig:
    """Every field is checked against :data:`FIELD_DOMAINS` when the config is built."""

    defense: str = "naive"
    hparams: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"
    # arch, epochs and milestones: None asks for the dataset's value, filled in by __post_init__, so a
    # built config always holds a value (hence the typed defaults below).
    arch: str = None  # type: ignore[assignment]  # the dataset's default architecture
    n_members: int = 3
    epochs: int = None  # type: ignore[assignment]  # the dataset's paper epochs; with early stopping, the cap
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    milestones: list[int] = None  # type: ignore[assignment]  # the dataset's LR schedule
    lr_gamma: float = 0.1
    schedule: str = "multistep"  # or "plateau" (the D-ReLU paper's ReduceLROnPlateau)
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    early_stop_patience: int | None = None  # None: train every epoch
    monitor: str = "nll"  # the validation loss the two watch: nll, or loss (nll + the defense's penalty)
    seed: int = 0  # the training randomness: initialisation, shuffling, augmentation
    # The seed of the data: the train/validation split and the subsets (None: ``seed``). A seed
    # confirmation retrains with a fresh ``seed`` and the search's ``split_seed``, so the model sees the
    # same images and is measured on the same validation points, none of which it trained on.
    split_seed: int | None = None
    subset: int | None = None  # train on a seeded subset of N images
    val_size: int = data.DEFAULT_VAL_SIZE
    val_subset: int | None = None  # evaluate on a seeded subset of the validation split
    activation: str | None = None  # None: what the defense's paper uses (GAL: leaky_relu), else relu
    augment: bool | None = None  # None: the dataset's default (crop + flip on CIFAR)
    data_dir: str | None = None
    device: str = "auto"
    # auto: channels_last on CPU, where it makes the double-backprop defenses faster
    # (benchmarks/step_time.py); contiguous on GPUs, where it has not been measured.
    memory_format: str = "auto"
    # How the members run (tune_div.models.EXECUTIONS): fused (one batched computation), looped (one after
    # the other), auto (fused where supported and measured faster: CPU). Same numbers to float tolerance.
    execution: str = "auto"
    # Adversarial training on top of any defense: {attack, eps, steps, ratio}. A share ``ratio`` of
    # every batch is replaced by adversarial examples of the current ensemble.
    adv_train: dict[str, Any] | None = None
    # CPU threads for torch. Float reductions differ with the thread count, so reproducing a run
    # exactly needs the same number (a search records its --cpus-per-trial here). None: torch's default.
    num_threads: int | None = None
    # fp32, tf32 or bf16 (tune_div.train.precision); auto: the device's measured default (fp32 on CPUs).
    precision: str = "auto"

    def __post_init__(self):
        check("training config", "dataset", self.dataset, Text())
        meta = data.info(self.dataset)  # unknown dataset: UserError naming the choices
        if self.arch is None:
            self.arch = meta.default_arch
        if self.milestones is None:
            self.milestones = list(meta.milestones)
        if self.epochs is None:
            self.epochs = meta.epochs
        for name, domain in FIELD_DOMAINS.items():
            check("training config", name, getattr(self, name), domain)
        if not sorted_unique(self.milestones):
            raise UserError(f"training config: milestones={self.milestones} must be increasing epochs")
        models.MODELS.get(self.arch)
        defenses.build(self.defense, **self.hparams)  # unknown defense or hyperparameter, value out of domain
        try:
            resolve_device(self.device)
        except RuntimeError:
            raise UserError(
                f"training config: device={self.device!r} is not valid; expected auto, cpu, cuda or cuda:<index>"
            ) from None
        if self.adv_train is not None:
            self.adv_train = validate_adv_train(self.adv_train, meta.objective_eps)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        if not isinstance(d, dict):
            raise UserError(f"training config: expected a mapping of options, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown training option(s) {unknown}; valid: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def data_seed(self) -> int:
        """The seed of the train/validation split and the subsets."""
        return self.seed if self.split_seed is None else self.split_seed

    def identity(self) -> dict[str, Any]:
        """What defines the model trained (a checkpoint of another identity is refused); hyperparameters
        with the paper's values filled in, so ``{}`` and ``{"lam": 1.0}`` are the same SMD."""
        out = {k: v for k, v in self.to_dict().items() if k not in NOT_IDENTITY}
        out["hparams"] = {**defenses.defaults(self.defense, self.dataset), **self.hparams}
        return out


FIELD_DOMAINS = {
    "defense": Text(),
    "hparams": _Mapping(),
    "arch": Text(),
    "n_members": COUNT,
    "epochs": COUNT,
    "batch_size": COUNT,
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "milestones": ListOf(Int(min=1)),
    "lr_gamma": Float(0.0, 1.0, open_low=True),
    "schedule": OneOf(SCHEDULES),
    "plateau_factor": Float(0.0, 1.0, open_low=True, open_high=True),
    "plateau_patience": Int(min=0),
    "early_stop_patience": Maybe(COUNT),
    "monitor": OneOf(MONITORS),
    "seed": SEED,
    "split_seed": Maybe(SEED),
    "subset": Maybe(COUNT),
    "val_size": COUNT,
    "val_subset": Maybe(COUNT),
    "activation": Maybe(OneOf(ACTIVATIONS)),
    "augment": Maybe(Bool()),
    "data_dir": Maybe(Text()),
    "device": Text(),
    "memory_format": OneOf(MEMORY_FORMATS),
    "num_threads": Maybe(COUNT),
    "execution": OneOf(models.EXECUTIONS),
    "precision": OneOf(PRECISION_CHOICES),
}


def validate_adv_train(spec: dict[str, Any], default_eps: float) -> dict[str, Any]:
    """Fill defaults and check an ``adv_train`` spec; ``steps`` applies to iterative attacks only."""
    if not isinstance(spec, dict):
        raise UserError(f"adv_train: expected a mapping of {sorted(ADV_TRAIN_DEFAULTS)}, got {spec!r}")
    valid = {**ADV_TRAIN_DEFAULTS, **ADV_TRAIN_OPTIONAL}
    unknown = sorted(set(spec) - set(valid))
    if unknown:
        raise UserError(f"unknown adv_train key(s) {unknown}; valid: {sorted(valid)}")
    out = {**ADV_TRAIN_DEFAULTS, **{k: v for k, v in spec.items() if ADV_TRAIN_OPTIONAL.get(k, object()) != v}}
    if out.get("source") is not None:
        check("adv_train", "source", out["source"], Text())
    if "random_eps" in out:
        check("adv_train", "random_eps", out["random_eps"], Bool())
    if "retrain_epochs" in out:
        check("adv_train", "retrain_epochs", out["retrain_epochs"], COUNT)
    usable = attacks.names(adversarial_training=True)
    if out["attack"] not in usable:
        raise UserError(f"adv_train attack must be one of {', '.join(usable)}, got {out['attack']!r}")
    if out["eps"] is None:
        out["eps"] = default_eps
    check("adv_train", "eps", out["eps"], LINF_EPS)
    check("adv_train", "steps", out["steps"], COUNT)
    check("adv_train", "ratio", out["ratio"], Float(0.0, 1.0, open_low=True))
    return out


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_memory_format(name: str, device: torch.device) -> torch.memory_format:
    if name == "auto":
        name = "channels_last" if device.type == "cpu" else "contiguous"
    return torch.channels_last if name == "channels_last" else torch.contiguous_format
