"""MLflow tracking of a search: a parent run per search, a nested child run per trial.

Layout (DESIGN.md, "MLflow layout"): tracking URI ``sqlite:///<storage>/mlflow.db`` by default (MLflow 3
refuses file stores), any URI accepted; experiment ``<defense>-<dataset>`` (one per search target);
artifacts under ``<storage>/mlartifacts``. Parent: the search settings as params; defense, dataset,
architecture, sampler and objectives as tags; ``hypervolume`` and ``front_size`` metrics refreshed as
trials finish; ``pareto.csv``, ``pareto.json``, ``pareto.png``, the search space and the exported
configs as artifacts. Child (tag ``mlflow.parentRunId``): hyperparameters and fixed config as params,
every epoch's metrics at ``step = epoch``, final validation and test metrics, ``status``, ``flags`` and
``pareto=true|false`` tags, ``config.yaml`` (the trial in the exported-config format) as artifact.

Nothing is logged twice: a child is found again by its ``tune_div.trial_id`` tag, and epochs already
logged are skipped, so a resumed search continues the same runs; an interrupted search leaves its runs
KILLED (never RUNNING) and a failed trial's run is FAILED with the reason in ``tune_div.error``.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

PARENT_ROLE = "search"
CHILD_ROLE = "trial"
LOGGED_METRICS_PREFIXES = ("val_", "test_", "part_", "train_loss", "epoch_time_s", "eval_time_s", "proxy_", "lr",
                           "flagged")


def default_uri(storage_path: str | Path) -> str:
    return f"sqlite:///{Path(storage_path).resolve() / 'mlflow.db'}"


def experiment_name(defense: str, dataset: str) -> str:
    return f"{defense}-{dataset}"


def client_for(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def get_or_create_experiment(client, name: str, artifact_root: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = f"{Path(artifact_root).resolve().as_uri()}/{name}" if artifact_root else None
    return client.create_experiment(name, artifact_location=location)


def _flat_params(prefix: str, d: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_params(key + ".", v))
        else:
            out[key] = str(v)[:6000]
    return out


def _metric(key, value, step, ts):
    from mlflow.entities import Metric

    return Metric(key, float(value), ts, int(step))


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if k.startswith(LOGGED_METRICS_PREFIXES) and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v))}


class SearchTracker:
    """Talks to MLflow for one search; picklable (Ray stores it with the experiment for resume)."""

    def __init__(self, uri: str, experiment: str, artifact_root: str | None, parent_run_id: str | None = None):
        self.uri, self.experiment, self.artifact_root = uri, experiment, artifact_root
        self.parent_run_id = parent_run_id
        self.children: dict[str, str] = {}  # Ray trial id -> MLflow run id
        self.logged_step: dict[str, int] = {}
        self.front_tags: dict[str, tuple] = {}  # what the pareto/knee/eligibility tags last said, per run
        self._client = None
        self._experiment_id: str | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_client"] = None
        state["_experiment_id"] = None
        return state

    @property
    def client(self):
        if self._client is None:
            self._client = client_for(self.uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = get_or_create_experiment(self.client, self.experiment, self.artifact_root)
        return self._experiment_id

    # -- parent ------------------------------------------------------------------------------------
    def start_parent(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        if self.parent_run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=name,
                                         tags={"tune_div.role": PARENT_ROLE, **tags})
            self.parent_run_id = run.info.run_id
            self.client.log_batch(self.parent_run_id, params=[_param(k, v) for k, v in _flat_params("", params).items()])
        else:  # resume: the same parent continues
            self.client.update_run(self.parent_run_id, status="RUNNING")
            self.attach_children()
        return self.parent_run_id

    def attach_children(self) -> None:
        for run in self.child_runs():
            tid = run.data.tags.get("tune_div.trial_id")
            if tid:
                self.children[tid] = run.info.run_id
                hist = self.client.get_metric_history(run.info.run_id, "val_clean_acc")
                self.logged_step[run.info.run_id] = max((m.step for m in hist), default=0)

    def child_runs(self):
        return self.client.search_runs([self.experiment_id], f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
                                       max_results=5000)

    def end_parent(self, status: str) -> None:
        for run_id in self.children.values():
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, "KILLED")
        self.client.set_terminated(self.parent_run_id, status)

    def log_front(self, rows: list[dict[str, Any]], table: dict[str, Any], files: list[Path]) -> None:
        """Parent metrics and artifacts, and the ``pareto`` tag of every child."""
        ts = int(time.time() * 1000)
        self.client.log_batch(self.parent_run_id, metrics=[
            _metric("hypervolume", table["hypervolume"], 0, ts), _metric("front_size", len(table["front"]), 0, ts),
            _metric("trials_finished", sum(r["status"] == "TERMINATED" for r in rows), 0, ts)])
        for r in rows:  # only tags that changed: this runs at every trial end, over every trial
            run_id = self.children.get(str(r["trial_id"]))
            tags = ("true" if r.get("pareto") else "false", r.get("eligibility", ""), "true" if r.get("knee") else "false")
            if run_id and self.front_tags.get(run_id) != tags:
                self.client.log_batch(run_id, tags=[_tag("pareto", tags[0]), _tag("tune_div.eligibility", tags[1]),
                                                    _tag("knee", tags[2])])
                self.front_tags[run_id] = tags
        for f in files:
            if f.is_file():
                self.client.log_artifact(self.parent_run_id, str(f))
            elif f.is_dir():
                self.client.log_artifacts(self.parent_run_id, str(f), artifact_path=f.name)

    # -- children ----------------------------------------------------------------------------------
    def child(self, trial_id: str, config: dict[str, Any], config_doc: dict[str, Any]) -> str:
        if trial_id in self.children:
            self.client.update_run(self.children[trial_id], status="RUNNING")
            return self.children[trial_id]
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{trial_id}", tags={
            "mlflow.parentRunId": self.parent_run_id, "tune_div.role": CHILD_ROLE, "tune_div.trial_id": trial_id,
            "status": "RUNNING"})
        run_id = run.info.run_id
        params = {**_flat_params("hparams.", config.get("hparams") or {}),
                  **_flat_params("train.", config.get("train") or {}),
                  **_flat_params("", {k: v for k, v in config.items() if k not in ("hparams", "train", "blackbox")})}
        self.client.log_batch(run_id, params=[_param(k, v) for k, v in params.items()])
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "config.yaml"
            path.write_text(yaml.safe_dump(config_doc, sort_keys=False))
            self.client.log_artifact(run_id, str(path))
        self.children[trial_id] = run_id
        self.logged_step[run_id] = 0
        return run_id

    def log_epoch(self, trial_id: str, metrics: dict[str, Any]) -> None:
        run_id = self.children.get(trial_id)
        step = int(metrics.get("epoch", 0))
        if run_id is None or step <= self.logged_step.get(run_id, 0):
            return  # an epoch re-reported after a resume is not logged twice
        ts = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[_metric(k, v, step, ts) for k, v in _numeric(metrics).items()])
        self.client.set_tag(run_id, "flags", metrics.get("flags", ""))
        self.logged_step[run_id] = step

    def finish_child(self, trial_id: str, status: str, last: dict[str, Any] | None, error: str = "") -> None:
        run_id = self.children.get(trial_id)
        if run_id is None:
            return
        if last:
            finals = {f"final_{k}": v for k, v in _numeric(last).items() if k.startswith(("val_", "test_"))}
            self.client.log_batch(run_id, metrics=[_metric(k, v, 0, int(time.time() * 1000)) for k, v in finals.items()])
        self.client.set_tag(run_id, "status", status)
        if error:
            self.client.set_tag(run_id, "tune_div.error", error[:5000])
        self.client.set_terminated(run_id, {"TERMINATED": "FINISHED", "ERROR": "FAILED"}.get(status, "KILLED"))


def _tag(k, v):
    from mlflow.entities import RunTag

    return RunTag(k, v)


def _param(k, v):
    from mlflow.entities import Param

    return Param(k, v)


def pareto_plot(rows: list[dict[str, Any]], table: dict[str, Any], path: Path, title: str) -> None:
    """All trials, the front highlighted (line + filled markers), flagged trials marked with x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xk, yk = table["objectives"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    groups = {"other": [], "flagged": [], "infeasible": []}
    for r in rows:
        if r.get(xk) is None or r.get(yk) is None or r.get("pareto"):
            continue
        groups["flagged" if r.get("eligibility") == "flagged" else
               "infeasible" if r.get("eligibility") == "infeasible" else "other"].append((r[xk], r[yk]))
    style = {"other": dict(c="0.6", marker="o", label="trials"), "flagged": dict(c="tab:red", marker="x", label="flagged (masking)"),
             "infeasible": dict(c="0.8", marker="s", label="below clean floor")}
    for name, pts in groups.items():
        if pts:
            ax.scatter(*zip(*pts), s=30, **style[name])
    front = sorted(((r[xk], r[yk]) for r in table["front"]), key=lambda p: p[0])
    if front:
        ax.plot(*zip(*front), "-o", c="tab:blue", label=f"Pareto front (HV {table['hypervolume']:.3f})")
    if table.get("knee"):
        ax.scatter([table["knee"][xk]], [table["knee"][yk]], s=160, facecolors="none", edgecolors="tab:orange",
                   linewidths=2, label="knee")
    ax.set_xlabel(xk.replace("_", " "))
    ax.set_ylabel(yk.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(0.08)
    ax.legend(fontsize=8, loc="best", framealpha=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
