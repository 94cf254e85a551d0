"""``gal-table``: the MNIST rows of Table 2 of the GAL paper (Kariyappa & Qureshi, "Improving Adversarial
Robustness of Ensembles with Diversity Training"), measured here and shown next to the paper's.

Protocol (paper, Sec. 4.1): ensembles of 5 Conv3 with LeakyReLU, 10 epochs on MNIST, Adam, random shift
and crop augmentation (not here: the deviations say why); the diverse ensemble also trains on a noisy
copy of the images. Black-box only: FGSM, R-FGSM, I-FGSM, MI-FGSM and PGD on the CW hinge loss,
crafted on a separately trained naive 5 x Conv3 surrogate (the average cross-entropy of its members),
each at two ε. Rows: the baseline ensemble, the GAL ensemble, ensemble adversarial training (EAT) and
EAT with GAL.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..eval.surrogate import config_key
from ..train import TrainConfig
from .base import Log, register_protocol, reproduce_cache, train_cached
from .claims import Claim
from .paper_table import AttackSet, Method, PaperTable, TableSettings

ATTACKS = ("fgsm", "rfgsm", "bim", "mim", "pgd_cw")
# the paper's two ε for MNIST are lost in our copy: these are our reading (see the deviations)
EPS = (0.1, 0.3)

# Table 2, Conv3 (MNIST) rows, accuracy in %: clean, then FGSM, R-FGSM, I-FGSM, MI-FGSM, PGD-CW, each at
# the small / large ε; rows baseline, GAL, EAT, EAT + GAL.
CLEAN = {"baseline": 99.4, "gal": 99.2, "eat": 99.4, "eat_gal": 99.3}
ROWS = {
    "baseline": ((91.4, 9.7), (92.0, 9.7), (86.1, 0.7), (85.7, 2.6), (92.3, 9.7)),
    "gal": ((97.1, 34.3), (97.8, 30.6), (97.6, 20.4), (96.9, 16.9), (97.1, 35.9)),
    "eat": ((98.9, 61.3), (99.0, 42.5), (99.0, 56.3), (98.8, 45.9), (98.8, 44.8)),
    "eat_gal": ((98.9, 73.7), (99.0, 79.3), (99.0, 87.0), (98.8, 61.4), (98.2, 71.3)),
}
ORDER = tuple(ROWS)
NUMBERS = {
    "mnist": {
        "clean": {"clean": {0.0: tuple(CLEAN[k] for k in ORDER)}},
        "black_box": {
            a: {e: tuple(ROWS[k][i][j] for k in ORDER) for j, e in enumerate(EPS)} for i, a in enumerate(ATTACKS)
        },
    }
}


GAL = {"lam": 0.5, "noise_std": 0.1}
STATIC = "static-source"  # replaced by the pre-trained source model's file (GALTable.train_config)
SOURCE_SEED = 2000
EAT = {"attack": "fgsm", "eps": 0.3, "ratio": 0.5, "random_eps": True, "source": STATIC}


@register_protocol("gal-table")
class GALTable(PaperTable):
    name = "gal-table"
    summary = "the GAL paper's Table 2, MNIST rows (5 x Conv3, black-box; baseline, GAL, EAT, EAT + GAL)"
    paper = "GAL (Kariyappa & Qureshi 2019)"
    table = "Table 2 (MNIST rows)"
    methods = (
        Method("baseline", "Baseline", "naive", {}, {"activation": "leaky_relu"}),
        Method("gal", "GAL", "gal", GAL),
        Method("eat", "EAT", "naive", {}, {"activation": "leaky_relu", "adv_train": EAT}),
        Method("eat_gal", "EAT + GAL", "gal", GAL, {"adv_train": EAT}),
    )
    paper_columns = ORDER
    numbers = NUMBERS
    paper_epochs = {"mnist": 10}
    # six trainings of 5 x Conv3 (four rows, the EAT source, the surrogate), GAL's steps about four naive
    # ones: this fits in about three hours of a 2-core CPU; `--epochs 10 --subset all` is the paper's
    default_epochs = {"mnist": 1}
    default_subset = {"mnist": 30000}
    routine = {"arch": "conv3", "n_members": 5, "lr": 1e-3, "augment": False}
    surrogate = Method("naive", "naive surrogate", "naive", {}, {"activation": "leaky_relu"})
    deviations = (
        "budget: `--budget full` here trains 1 epoch on a seeded 30,000 of the training images (the paper: 10 "
        "epochs on all of them, `--epochs 10 --subset all`), to fit a CPU",
        "ε: the two perturbation sizes for MNIST are lost in our copy of the paper; we read them as 0.1 and "
        "0.3 (the paper's accuracies fall from about 90% to about 10% on the baseline between them). The "
        "paper's numbers are placed at those ε",
        "the attacks' steps (I-FGSM, MI-FGSM: lost), PGD-CW's confidence and iterations (lost): tune_div's "
        "defaults (10 steps of ε/5; CW confidence 50); R-FGSM's random step ε/2",
        'λ of GAL: lost in our copy ("we set λ = ... as a good trade-off"); ours 0.5. The noisy copy\'s '
        "truncated-normal σ is lost too: ours adds Gaussian noise of std 0.1 to a copy of every batch",
        "augmentation: none. The paper shifts and crops MNIST; tune_div's augmentation also flips "
        "horizontally, which would be wrong for digits. Learning rate: lost, ours 1e-3",
        "EAT: half of every batch replaced by FGSM examples of a static pre-trained naive 5 x Conv3 (seed "
        f"{SOURCE_SEED}, the same routine; the paper: a pretrained model of the target's architecture), "
        "with ε drawn per batch from a normal of std 0.15 truncated to [0, 0.3] (the paper draws it per "
        "example from a truncated normal whose parameters our copy lost)",
        "surrogate: one naive 5 x Conv3 (LeakyReLU), seed 1000, the same routine; the paper's is trained "
        "likewise, its seed unknown",
        "split: the standard test set; robust accuracy on a fixed seeded subset of `--n` test points",
    )
    claims = (
        Claim(
            "GAL beats the baseline ensemble under every black-box attack on MNIST at both ε",
            "mnist",
            "black_box",
            ATTACKS,
            "gal",
            ("baseline",),
            EPS,
        ),
        Claim(
            "EAT with GAL beats EAT alone under every black-box attack on MNIST at the large ε",
            "mnist",
            "black_box",
            ATTACKS,
            "eat_gal",
            ("eat",),
            EPS[1:],
        ),
    )

    def source_config(self, s: TableSettings) -> TrainConfig:
        """The static model EAT crafts its training examples on (the paper: pretrained, same architecture)."""
        return super().train_config(s, self.method("baseline"), SOURCE_SEED)

    def source_file(self, s: TableSettings) -> Path:
        """Where ``train_cached`` keeps the static source model."""
        return reproduce_cache() / config_key(self.source_config(s)) / "model.pt"

    def train_config(self, s: TableSettings, method: Method, seed: int) -> TrainConfig:
        cfg = super().train_config(s, method, seed)
        if cfg.adv_train and cfg.adv_train.get("source") == STATIC:
            cfg = replace(cfg, adv_train={**cfg.adv_train, "source": str(self.source_file(s))})
        return cfg

    def record_config(self, s: TableSettings, method: Method, seed: int) -> TrainConfig:
        return super().train_config(s, method, seed)  # the source as STATIC, not as a path in this cache

    def prepare(self, s: TableSettings, method: Method, log: Log) -> None:
        needs = (method.train.get("adv_train") or {}).get("source") == STATIC
        if needs and not self.source_file(s).is_file():  # train it once; the Trainer loads the file
            log(f"  the static EAT source: a naive 5 x Conv3, seed {SOURCE_SEED} (trained once, cached)")
            train_cached(self.source_config(s), log)

    @classmethod
    def attack_sets(cls, dataset: str) -> tuple[AttackSet, ...]:
        return (
            AttackSet("black_box", ATTACKS, EPS),
            AttackSet("white_box", ("pgd",), (0.1,), audit=True),
        )
