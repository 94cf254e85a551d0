"""Evaluate a saved ensemble: ``tune-div evaluate --model ens.pt --dataset mnist
--attacks pgd,fgsm --eps 0.1,0.2 [--split test] [--n 1000|all] [--black-box] [--transfer-matrix]
[--curves] --out r.json``.

Prints a table and writes the JSON documented in the README (Evaluation). Sanity flags for gradient
masking are computed every time; each one printed points to docs/flags.md.
"""

from __future__ import annotations

import json
import sys

from .. import attacks, data, models
from ..attacks.audit import PRESETS as AUDIT_PRESETS
from ..domains import COUNT, LINF_EPS, POSITIVE, SEED, check
from ..errors import UserError
from ..eval import DEFAULT_N, EvalSpec, evaluate
from ..files import atomic_write_text
from .common import ArgumentParser, check_outputs_writable, cli_errors, parse_key_values

PROG = "tune-div evaluate"


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="ensemble file written by tune_div.train --save-model")
    p.add_argument("--dataset", required=True, help=f"one of: {', '.join(data.names())}")
    p.add_argument("--attacks", default="pgd", help=f"comma-separated; registered: {', '.join(attacks.names())}")
    p.add_argument(
        "--eps",
        help="comma-separated radii (L∞ in [0, 1] pixels; L2 for cw_l2); default: the dataset's "
        "objective eps (MNIST-like 0.1, CIFAR 0.01)",
    )
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--n", default=str(DEFAULT_N), help="points of a fixed seeded subset, or 'all'")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset (and of the validation split)")
    p.add_argument("--black-box", action="store_true", help="transfer from a cached naive surrogate ensemble")
    p.add_argument("--no-white-box", action="store_true", help="skip the white-box attacks (e.g. black-box only)")
    p.add_argument(
        "--surrogate-epochs",
        type=int,
        help="default: the evaluated model's own training routine "
        "(recorded in its file; else the dataset's paper epochs)",
    )
    p.add_argument("--transfer-matrix", action="store_true", help="member-to-member transferability (first attack/eps)")
    p.add_argument("--curves", action="store_true", help="robust accuracy over the dataset's eps grid")
    p.add_argument(
        "--attack-option",
        action="append",
        metavar="ATTACK:KEY=VALUE[,KEY=VALUE]",
        help="override an attack's option, e.g. pgd:steps=40,step=0.01 (repeatable)",
    )
    p.add_argument(
        "--audit",
        nargs="?",
        const="fast",
        choices=list(AUDIT_PRESETS),
        help="also run the audit, the strong adaptive suite (worst case per point; docs/audit.md): "
        "fast (the default when given alone) or standard (for a final report)",
    )
    p.add_argument("--no-sanity", action="store_true", help="skip the gradient-masking sanity checks")
    p.add_argument("--data-dir")
    p.add_argument("--out", help="write the JSON result here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse_floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = None
    if not values:
        raise UserError(f"{what} must be comma-separated numbers, got {text!r}")
    return values


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    with cli_errors(prog):
        check_outputs_writable(args.out)
        n = None if args.n == "all" else int(args.n) if args.n.isdigit() else None
        if (n is None and args.n != "all") or n == 0:
            raise UserError(f"--n must be a positive number or 'all', got {args.n!r}")
        options: dict[str, dict] = {}
        for item in args.attack_option or []:
            name, _, rest = item.partition(":")
            options.setdefault(name, {}).update(parse_key_values(rest.split(","), "--attack-option"))
        meta = data.info(args.dataset)
        eps = parse_floats(args.eps, "--eps") if args.eps else [meta.objective_eps]
        names = [a for a in args.attacks.split(",") if a]
        for name in names:
            domain = LINF_EPS if attacks.ATTACKS.get(name).norm == "linf" else POSITIVE
            for e in eps:
                check(f"--eps (for {name})", "eps", e, domain)
        check("--seed", "seed", args.seed, SEED)
        if args.surrogate_epochs is not None:
            check("--surrogate-epochs", "epochs", args.surrogate_epochs, COUNT)
        spec = EvalSpec(
            dataset=args.dataset,
            attacks=names,
            eps=eps,
            split=args.split,
            n=n,
            seed=args.seed,
            white_box=not args.no_white_box,
            black_box=args.black_box,
            transfer=args.transfer_matrix,
            curves=args.curves,
            sanity=not args.no_sanity,
            attack_options=options,
            surrogate_epochs=args.surrogate_epochs,
            data_dir=args.data_dir,
            audit=args.audit,
        )
        for name, opts in options.items():
            attacks.get(name).options(spec.eps[0], **opts)  # unknown attack or option: error now
        ens = models.load_ensemble(args.model)
        if ens.config["in_channels"] != meta.in_channels or ens.config["num_classes"] != meta.num_classes:
            raise UserError(
                f"{args.model} takes {ens.config['in_channels']}-channel images with "
                f"{ens.config['num_classes']} classes; {args.dataset} has {meta.in_channels} and "
                f"{meta.num_classes}"
            )
        bar = None if args.quiet else Progress()
        result = evaluate(ens, spec, progress=bar, log=lambda s: print(s, flush=True))
        if bar:
            bar.close()
        result["model"] = str(args.model)
        print_summary(result)
        if args.out:
            atomic_write_text(args.out, json.dumps(result, indent=2))
            print(f"written to {args.out}")
    return 0


class Progress:
    """A one-line progress bar on stderr (tqdm), one per task: created when the task starts (``done``
    0), advanced with ``update`` so its rate is points per second of real work."""

    def __init__(self):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None
        self.label = None

    def __call__(self, label: str, done: int, total: int):
        if label != self.label:
            self.close()
            self.bar = self._tqdm(total=total, desc=label, file=sys.stderr, leave=False, unit="pt")
            self.label = label
        self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def print_summary(r: dict) -> None:
    print(
        f"{r['dataset']} {r['split']}, n={r['n']}: clean accuracy {r['clean_acc']:.4f} "
        f"({r['forward_passes_per_prediction']} forward passes per prediction); intervals are 95% Wilson, "
        f"about ±{1.96 * (0.25 / r['n']) ** 0.5:.3f} at 50% on these points"
    )
    tm = r["threat_models"]
    for attack, per_eps in tm.get("white_box", {}).items():
        row = "  ".join(f"eps={e}: {a:.4f}" for e, a in per_eps.items())
        print(f"  white-box {attack:<10} {row}")
    if "black_box" in tm:
        for attack, per_eps in tm["black_box"]["acc"].items():
            row = "  ".join(f"eps={e}: {a:.4f}" for e, a in per_eps.items())
            print(f"  black-box {attack:<10} {row}")
    if "transfer_matrix" in tm:
        m = tm["transfer_matrix"]
        print(f"  transferability ({m['attack']}, eps={m['eps']}): rows = source, columns = target")
        print(f"    {'':<10}" + "".join(f"{n:>10}" for n in m["names"]))
        for name, row in zip(m["names"], m["acc"]):
            print(f"    {name:<10}" + "".join(f"{a:>10.4f}" for a in row))
    if "audit" in r:
        a = r["audit"]
        for eps, acc in a["robust_acc"].items():
            steps = ", ".join(f"{k} {v:.4f}" for k, v in a["per_attack"][eps].items())
            low, high = r["intervals"]["audit"][eps]
            print(
                f"  audit ({a['preset']}) eps={eps}: {acc:.4f} [{low:.4f}, {high:.4f}]  "
                f"(robust accuracy after {steps}; docs/audit.md)"
            )
    for f in r.get("flags", []):
        print(f"  WARNING {f['name']}: {f['message']} (see {f['doc']})")
    if "sanity" in r and not r.get("flags"):
        print("  sanity checks passed (docs/flags.md)")
