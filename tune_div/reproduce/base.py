"""What every reproduction shares: the protocol base class, cached training and evaluation, rank agreement.

Trained ensembles are cached under ``$TUNE_DIV_CACHE/reproduce/<config key>/`` (``model.pt``,
``history.json``, ``config.json``; a ``checkpoint.pt`` while training, so a killed run resumes at its
last epoch), and each evaluation of a model next to it under a key of its evaluation spec: a rerun
with more methods or seeds trains and measures only what is new.
"""

from __future__ import annotations

import abc
import argparse
import hashlib
import json
import math
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from .. import models
from ..eval import EvalSpec, evaluate
from ..eval.surrogate import config_key, stable_config_doc
from ..files import atomic_write_text, cache_root
from ..progress import EpochProgress
from ..registry import Registry
from ..train import TrainConfig, Trainer

PROTOCOLS: Registry = Registry("protocol")
register_protocol = PROTOCOLS.register

Log = Callable[[str], None]


class Protocol(abc.ABC):
    """A paper's experiment. Subclasses set ``name``, ``summary`` and implement ``add_arguments`` (its
    options on the ``reproduce`` command's parser) and ``run(args, out, log) -> result``, which writes
    its files under ``out`` and returns a JSON-able dict."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    @classmethod
    @abc.abstractmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the protocol's options to its ``reproduce`` subcommand."""

    @abc.abstractmethod
    def run(self, args: argparse.Namespace, out: Path, log: Log) -> dict[str, Any]:
        """Train and measure what the table needs, write it under ``out``, return the JSON-able result."""

    @classmethod
    def changed_arch(cls, settings: dict[str, Any]) -> str | None:
        """The architecture a result's ``settings`` ran instead of the paper's, or None: a paper table's
        ``arch`` is the ``--arch`` override."""
        return settings.get("arch")


def add_epochs_for_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """``--epochs-for METHOD=N`` (repeatable): one method's epochs instead of ``--epochs``."""
    parser.add_argument(
        "--epochs-for",
        action="append",
        metavar="METHOD=N",
        help=f"train METHOD for N epochs instead (repeatable; e.g. {example}); the table says so",
    )


def epochs_for(items: Sequence[str] | None, methods: Sequence[str]) -> dict[str, int]:
    """``{method: epochs}`` from ``--epochs-for`` items, each ``METHOD=N`` with a method of ``methods``."""
    from ..errors import UserError

    out: dict[str, int] = {}
    for item in items or []:
        method, _, n = item.partition("=")
        if method not in methods or not n.isdigit() or int(n) < 1:
            raise UserError(
                f"--epochs-for expects METHOD=N with a method of {', '.join(methods)} and N >= 1, got {item!r}"
            )
        out[method] = int(n)
    return out


def reproduce_cache() -> Path:
    return cache_root() / "reproduce"


def train_cached(cfg: TrainConfig, log: Log, root: Path | None = None) -> tuple[models.Ensemble, list[dict], bool]:
    """The ensemble ``cfg`` trains, from the cache when it is there; returns (ensemble, history, from_cache)."""
    folder = (root or reproduce_cache()) / config_key(cfg)
    model_path = folder / "model.pt"
    if model_path.is_file():
        return models.load_ensemble(model_path), json.loads((folder / "history.json").read_text()), True
    folder.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg)
    seen = [False]
    progress = EpochProgress(cfg.epochs, f"{cfg.defense} seed {cfg.seed}")

    def report(m: dict) -> None:
        if not seen[0] and m["epoch"] > 1:
            log(f"  {cfg.defense} seed {cfg.seed}: resumed from the checkpoint of epoch {m['epoch'] - 1}")
        seen[0] = True
        phase, at, total = trainer.phase()
        word = "epoch" if phase == "training" else "retraining epoch"
        progress.epoch(
            at,
            m["epoch_time_s"],
            f"  {cfg.defense} seed {cfg.seed} {word} {at}/{total}: loss {m['train_loss']:.4f}, "
            f"val acc {m['val_clean_acc']:.4f}, {m['epoch_time_s']:.1f}s",
            emit=log,
            total=total,
        )

    with progress:
        history = trainer.fit(callback=report, checkpoint_path=folder / "checkpoint.pt")
    models.save_ensemble(trainer.ensemble.cpu(), model_path)
    atomic_write_text(folder / "config.json", json.dumps(cfg.to_dict(), indent=2))
    atomic_write_text(folder / "history.json", json.dumps(history, indent=2))
    (folder / "checkpoint.pt").unlink(missing_ok=True)
    return trainer.ensemble.eval(), history, False


def eval_keys(spec: EvalSpec) -> tuple[str, ...]:
    """The cache keys of an evaluation spec: the key it is stored under, then the keys the same spec had
    before the surrogate's config gained ``split_seed``, and before that ``precision`` (read, never
    written), so evaluations cached by earlier versions are found."""

    def key(doc: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]

    doc = spec.cache_doc()
    sur = doc.get("surrogate_config")
    if sur is None:
        return (key(doc),)
    keys = [key(doc)]
    if sur.get("split_seed", None) is None:
        sur = {k: v for k, v in sur.items() if k != "split_seed"}
        keys.append(key({**doc, "surrogate_config": sur}))
        keys.append(key({**doc, "surrogate_config": stable_config_doc(sur)}))
    return tuple(dict.fromkeys(keys))


def evaluate_cached(
    ens: models.Ensemble, cfg: TrainConfig, spec: EvalSpec, log: Log, root: Path | None = None
) -> tuple[dict[str, Any], bool]:
    """``evaluate(ens, spec)``, cached next to the model ``cfg`` trained; returns (result, from_cache)."""
    folder = (root or reproduce_cache()) / config_key(cfg)
    path, *older = (folder / f"eval_{key}.json" for key in eval_keys(spec))
    for found in (path, *older):
        if found.is_file():
            return json.loads(found.read_text()), True
    result = evaluate(ens, spec, log=log)
    atomic_write_text(path, json.dumps(result, indent=2))
    return result, False


class RunRecords:
    """The measured numbers of each model of a table: one small JSON file per method and seed under
    ``<out>/records/``, committed with the table's results (weights never are).

    A rerun into the same ``--out`` takes a model's numbers from its record, without the model, when the
    record was made of the same training config and evaluation specs (its file name holds a key of both):
    a table too long for one machine's session is finished over several, each adding what it had time for.
    """

    def __init__(self, folder: Path):
        self.folder = folder

    @staticmethod
    def key(cfg: TrainConfig, specs: Sequence[EvalSpec]) -> str:
        doc = [config_key(cfg), *(eval_keys(spec)[0] for spec in specs)]
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]

    def path(self, method: str, cfg: TrainConfig, specs: Sequence[EvalSpec]) -> Path:
        return self.folder / f"{method}_seed{cfg.seed}_{self.key(cfg, specs)}.json"

    def get(
        self, method: str, cfg: TrainConfig, specs: Sequence[EvalSpec], log: Log | None = None
    ) -> dict[str, Any] | None:
        """The run a record holds for ``method`` trained by ``cfg`` and measured by ``specs``, or None;
        ``log`` is told when a record stands for the model."""
        path = self.path(method, cfg, specs)
        if not path.is_file():
            return None
        if log:
            log(f"  trained and measured before: from its record in {self.folder}")
        return json.loads(path.read_text())["run"]

    def put(self, protocol: str, method: str, cfg: TrainConfig, specs: Sequence[EvalSpec], run: dict[str, Any]) -> Path:
        path = self.path(method, cfg, specs)
        doc = {
            "record_of": protocol,  # not "protocol": a record is not a result (reproduce claims reads those)
            "method": method,
            "seed": cfg.seed,
            "model_key": config_key(cfg),
            "machine": machine(),
            "run": run,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(doc, indent=2))
        return path


def kendall_tau(measured: Sequence[float], paper: Sequence[float]) -> float | None:
    """Kendall's τ-b between two scorings of the same methods (scipy); None with fewer than 3 methods
    or when either scoring is constant (τ undefined)."""
    from scipy.stats import kendalltau

    if len(measured) < 3:
        return None
    tau = kendalltau(list(measured), list(paper)).statistic
    return None if tau is None or math.isnan(tau) else float(tau)


def interval_note(n: int) -> str:
    """The header line every table gets: how wide a single measured proportion's interval is."""
    from ..eval.intervals import accuracy_interval

    half, tenth = (100 * accuracy_interval(p, n).half_width for p in (0.5, 0.1))
    return (
        f"- each robust number of one seed is a proportion on {n} points: its 95% Wilson interval is about "
        f"±{half:.1f} points at 50% and ±{tenth:.1f} at 10% or 90% (`ci_low`, `ci_high` in the JSON); with "
        "several seeds, ±std is the seed spread"
    )


def seed_interval(values: Sequence[float], n: int) -> tuple[float | None, float | None]:
    """The 95% Wilson interval, in percent, of one seed's accuracy (a fraction) on ``n`` points; (None,
    None) for several seeds, whose spread is their std."""
    from ..eval.intervals import accuracy_interval

    if len(values) != 1:
        return None, None
    ci = accuracy_interval(values[0], n)
    return 100 * ci.low, 100 * ci.high


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def machine() -> str:
    """The machine a reproduction ran on, as its table states it."""
    import torch

    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, " + (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    )


def closing_lines(doc: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """The lines that end every reproduction table: the methods that diverged (and why), and the sanity
    flags any seed of a method raised (docs/flags.md)."""
    lines: list[str] = []
    for m, reason in doc.get("diverged", {}).items():
        lines += [f"{labels[m]} diverged and is left out: {reason}", ""]
    flagged = {m: sorted({f for r in rs for f in r["flags"]}) for m, rs in doc["runs"].items()}
    flagged = {m: f for m, f in flagged.items() if f}
    if flagged:
        lines += [
            "Sanity flags (docs/flags.md): " + "; ".join(f"{labels[m]}: {', '.join(f)}" for m, f in flagged.items()),
            "",
        ]
    return lines
