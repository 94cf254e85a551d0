"""``cldl-table``: Tables 4 and 6 of the CLDL paper (Wang & Liu, "Adversarial Ensemble Training by Jointly
Learning Label Dependencies and Member Models"): ensembles of 3 LeNet-5 on MNIST and F-MNIST against
black-box attacks, measured here and shown next to the paper's.

Protocol (paper, Sec. 4): Adam 1e-3, weight decay 1e-4, batch 128; every method under "a similar
training setup". Black-box only: FGSM, BIM, MIM and PGD (10 iterations of step ε/5, PGD from a random
start), crafted on a naive ensemble of the same architecture trained with the same routine, at ε 0.1,
0.15, 0.2, 0.25 (MNIST) and 0.08, 0.1, 0.15, 0.2 (F-MNIST). Columns ADP, GAL, DVERGE, TRS and CLDL
with (γ, α, β) = (3, 4, 4) and (3, 2, 1) on MNIST, (3, 2, 4) on F-MNIST. tune_div adds white-box PGD
and the audit at two ε: the paper never attacks its ensembles white-box.
"""

from __future__ import annotations

from .base import register_protocol
from .claims import Claim
from .paper_table import AttackSet, Method, PaperTable, Versions

BLACK = ("fgsm", "bim", "mim", "pgd", "pgd_cw")
VERSIONS = Versions(members=(3, 5), seeds=3, losses=("ce", "cw"))  # the authors' code: 12 versions
EPS = {"mnist": (0.1, 0.15, 0.2, 0.25), "fashion_mnist": (0.08, 0.1, 0.15, 0.2)}
WHITE_EPS = {"mnist": (0.1, 0.2), "fashion_mnist": (0.08, 0.15)}


def table(eps: tuple[float, ...], *per_eps: tuple[float | None, ...]) -> dict[float, tuple[float | None, ...]]:
    return dict(zip(eps, per_eps))


_M, _F = EPS["mnist"], EPS["fashion_mnist"]

# Table 4 (MNIST, columns ADP, GAL, DVERGE, TRS, CLDL(3,4,4), CLDL(3,2,1)) and Table 6 (F-MNIST, columns
# ADP, GAL, DVERGE, TRS, CLDL(3,2,4)); accuracy in %, mean of 5 runs.
NUMBERS = {
    "mnist": {
        "black_box": {
            "bim": table(
                _M,
                (90.18, 87.34, 90.24, 92.5, 94.48, 94.22, None),
                (60.38, 55.61, 61.21, 76.63, 85.64, 81.42, None),
                (23.23, 28.5, 21.17, 46.16, 65.11, 51.59, None),
                (5.32, 11.06, 2.53, 17.42, 32.81, 22.95, None),
            ),
            "fgsm": table(
                _M,
                (93.29, 90.77, 93.51, 94.55, 95.43, 95.5, None),
                (79.58, 69.94, 80.75, 86.21, 89.82, 88.56, None),
                (52.99, 47.35, 55.98, 70.64, 78.39, 72.73, None),
                (27.38, 30.13, 27.78, 48.1, 57.51, 46.77, None),
            ),
            "mim": table(
                _M,
                (90.21, 85.82, 90.52, 92.31, 94.25, 94.07, None),
                (63.05, 53.72, 63.67, 76.81, 85.31, 81.56, None),
                (24.69, 27.49, 23.88, 46.83, 65.1, 51.33, None),
                (5.58, 10.64, 3.16, 16.58, 30.44, 21.34, None),
            ),
            "pgd": table(
                _M,
                (89.66, 84.87, 89.82, 91.91, 93.75, 93.84, None),
                (56.83, 47.69, 57.86, 73.01, 83.5, 78.92, None),
                (19.42, 21.69, 17.32, 39.19, 58.94, 46.91, None),
                (3.06, 6.44, 1.05, 11.71, 24.81, 16.65, None),
            ),
        }
    },
    "fashion_mnist": {
        "black_box": {
            "bim": table(
                _F,
                (38.38, 54.43, 39.42, 54.71, None, None, 54.19),
                (28.39, 44.37, 28.16, 44.61, None, None, 44.99),
                (10.55, 22.63, 10.58, 25.06, None, None, 27.84),
                (1.78, 7.10, 2.69, 10.95, None, None, 13.98),
            ),
            "fgsm": table(
                _F,
                (48.25, 62.77, 52.39, 62.83, None, None, 61.99),
                (40.09, 54.22, 42.80, 53.64, None, None, 53.87),
                (23.24, 36.09, 25.41, 37.63, None, None, 38.49),
                (9.82, 15.85, 13.33, 23.45, None, None, 25.67),
            ),
            "mim": table(
                _F,
                (38.24, 52.83, 39.58, 53.46, None, None, 52.88),
                (28.41, 42.44, 28.19, 43.10, None, None, 43.41),
                (9.17, 19.61, 9.98, 23.01, None, None, 25.20),
                (1.01, 3.44, 2.33, 7.84, None, None, 9.75),
            ),
            "pgd": table(
                _F,
                (37.74, 52.34, 39.17, 52.86, None, None, 51.65),
                (27.75, 41.71, 28.15, 42.38, None, None, 42.23),
                (8.69, 18.78, 9.67, 22.44, None, None, 24.75),
                (1.08, 3.52, 2.24, 8.25, None, None, 10.91),
            ),
        }
    },
}


@register_protocol("cldl-table")
class CLDLTable(PaperTable):
    name = "cldl-table"
    summary = "the CLDL paper's Tables 4 and 6 (3 x LeNet-5, black-box; ADP, GAL, DVERGE, TRS, CLDL) beside its numbers"
    paper = "CLDL (Wang & Liu)"
    table = "Tables 4 (MNIST) and 6 (F-MNIST)"
    methods = (
        Method("adp", "ADP", "adp", {"alpha": 2.0, "beta": 0.5}),
        Method("gal", "GAL", "gal", {"lam": 0.5}),
        Method("dverge", "DVERGE", "dverge"),
        Method("trs", "TRS", "trs"),
        Method("cldl_344", "CLDL(3,4,4)", "cldl", {"gamma": 3.0, "alpha": 4.0, "beta": 4.0}),
        Method("cldl_321", "CLDL(3,2,1)", "cldl", {"gamma": 3.0, "alpha": 2.0, "beta": 1.0}),
        Method("cldl_324", "CLDL(3,2,4)", "cldl", {"gamma": 3.0, "alpha": 2.0, "beta": 4.0}),
    )
    paper_columns = ("adp", "gal", "dverge", "trs", "cldl_344", "cldl_321", "cldl_324")
    numbers = NUMBERS
    default_methods = {
        "mnist": ("adp", "gal", "dverge", "trs", "cldl_344", "cldl_321"),
        "fashion_mnist": ("adp", "gal", "dverge", "trs", "cldl_324"),
    }
    paper_epochs = {"mnist": 200, "fashion_mnist": 200}
    default_epochs = {"mnist": 20, "fashion_mnist": 30}  # the authors' public code
    routine = {"arch": "lenet5", "n_members": 3, "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 128}
    surrogate = Method("naive", "naive surrogate", "naive")
    deviations = (
        "epochs: the text says 200 (learning rate x0.1 at 100 and 150); the authors' public code trains MNIST 20 "
        "and F-MNIST 30 epochs, which `--budget full` runs (`--epochs 200` for the text's budget). The "
        "dataset's default schedule applies (`tune-div list datasets`)",
        "architecture: our LeNet-5 (the code uses a larger LeNet variant, not stated in the paper)",
        "metric: the paper's robust accuracy is most likely the authors' code's: a point counts only if it "
        "survives all 12 adversarial versions of an attack (naive surrogates of 3 and 5 members x 3 seeds x CE "
        "and CW losses); the paper states neither. We report both: each attack from one naive 3 x LeNet-5 "
        "surrogate (seed 1000) with the CE loss, plus PGD on the CW loss (the plain columns), and the worst of "
        "the 12 versions (columns marked so, surrogate seeds 1000-1002). The paper's numbers stand beside both; "
        "the claims ledger judges the plain columns, and its check is the lowest of every black-box column",
        "hyperparameters of ADP (α 2, β 0.5), GAL (λ 0.5), DVERGE and TRS: not given in the paper; each is "
        "its own paper's default here (`tune-div list defenses`)",
        "columns: MNIST runs CLDL(3,4,4) and CLDL(3,2,1), F-MNIST CLDL(3,2,4) (`--methods` changes it)",
        "split: the standard test set; robust accuracy on a fixed seeded subset of `--n` test points",
    )
    claims = (
        Claim(
            "CLDL(3,4,4) beats ADP, GAL, DVERGE and TRS under black-box PGD on MNIST at every ε",
            "mnist",
            "black_box",
            ("pgd",),
            "cldl_344",
            ("adp", "gal", "dverge", "trs"),
            _M,
        ),
        Claim(
            "CLDL(3,4,4) beats ADP, GAL, DVERGE and TRS under black-box FGSM, BIM and MIM on MNIST at ε ≥ 0.15",
            "mnist",
            "black_box",
            ("fgsm", "bim", "mim"),
            "cldl_344",
            ("adp", "gal", "dverge", "trs"),
            _M[1:],
        ),
        Claim(
            "TRS beats ADP, GAL and DVERGE under black-box PGD on MNIST at every ε",
            "mnist",
            "black_box",
            ("pgd",),
            "trs",
            ("adp", "gal", "dverge"),
            _M,
        ),
        Claim(
            "CLDL(3,2,4) beats ADP, GAL, DVERGE and TRS under black-box BIM on F-MNIST at ε ≥ 0.1",
            "fashion_mnist",
            "black_box",
            ("bim",),
            "cldl_324",
            ("adp", "gal", "dverge", "trs"),
            _F[1:],
        ),
    )

    @classmethod
    def attack_sets(cls, dataset: str) -> tuple[AttackSet, ...]:
        return (
            AttackSet("black_box", BLACK, EPS[dataset]),
            AttackSet(
                "black_box",
                tuple(a for a in BLACK if a != "pgd_cw"),
                EPS[dataset],
                key="_worst",
                versions=VERSIONS,
            ),
            AttackSet("white_box", ("pgd",), WHITE_EPS[dataset], audit=True),
        )
