"""MLflow tracking of a search: a parent run per search, a nested child run per trial.

Layout (README, "MLflow layout"): experiment ``<defense>-<dataset>`` (one per search target), the
store and artifact root of ``uri.py``. Parent: the search settings as params; defense, dataset,
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..search import states
from ..search.states import TrialState
from .browse import EXPERIMENT_NOTE, NOTE_TAG, front_markdown
from .uri import client_for, get_or_create_experiment

if TYPE_CHECKING:
    from ..search.trial_config import TrialConfig

PARENT_ROLE = "search"
CHILD_ROLE = "trial"
RETRAIN_ROLE = "retrain"
CONFIRM_ROLE = "confirmation"  # a seed confirmation's retrain, nested under its trial's run
CONFIRM_SEED_TAG = "tune_div.confirm_seed"
# A trial's final metrics (logged as ``final_<name>`` on its child run; read back by export).
# val_robust_acc / test_robust_acc are the robust objective (the audit, or the proxy with --audit off):
# final only, never per epoch, where they would mix proxy and audit in one curve.
FINAL_METRICS = (
    "val_clean_acc",
    "val_robust_acc",
    "val_proxy_acc",
    "val_audit_acc",
    "val_blackbox_acc",
    "test_clean_acc",
    "test_robust_acc",
    "test_proxy_acc",
    "test_audit_acc",
)
FINAL_ONLY = ("val_robust_acc", "test_robust_acc")
# the lift over the naive baseline, with its paired 95% interval and exact McNemar p (search/baseline.py)
LIFT_METRICS = tuple(
    f"{split}audit_lift{part}" for split in ("", "test_") for part in ("_over_naive", "_ci_low", "_ci_high", "_p")
)
STOPPED_TAG = "tune_div.stopped_at"  # the rung epoch a trial was stopped at
LOGGED_METRICS_PREFIXES = (
    "val_",
    "test_",
    "part_",
    "train_loss",
    "epoch_time_s",
    "eval_time_s",
    "audit_time_s",
    "proxy_",
    "lr",
    "flagged",
)


def flat_params(prefix: str, d: dict[str, Any]) -> dict[str, str]:
    """Nested dicts as ``a.b`` params, values as (truncated) strings."""
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(key + ".", v))
        else:
            out[key] = str(v)[:6000]
    return out


def metric(key, value, step, ts):
    from mlflow.entities import Metric

    return Metric(key, float(value), ts, int(step))


def numeric(metrics: dict[str, Any], prefixes: tuple[str, ...] | None = LOGGED_METRICS_PREFIXES) -> dict[str, float]:
    """The finite numeric entries of ``metrics`` (whose keys start with one of ``prefixes``, if given)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if (prefixes is None or k.startswith(prefixes))
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(float(v))
    }


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
            self._experiment_id = get_or_create_experiment(
                self.client, self.experiment, self.artifact_root, EXPERIMENT_NOTE.format(name=self.experiment)
            )
        return self._experiment_id

    # -- parent ------------------------------------------------------------------------------------
    def start_parent(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        if self.parent_run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=name, tags={"tune_div.role": PARENT_ROLE, **tags})
            self.parent_run_id = run.info.run_id
            self.client.log_batch(self.parent_run_id, params=[param(k, v) for k, v in flat_params("", params).items()])
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

    def reconcile(self, ends: dict[str, tuple[str, dict | None, str]], lost_reason: str) -> list[str]:
        """After a killed driver, once :meth:`start_parent` has re-attached the children: ``ends`` maps every
        trial Ray knows to (status, last result, error). A child of a trial Ray finished that is still
        RUNNING gets that end; a child of a trial Ray never recorded belongs to no trial: it is marked
        FAILED with ``lost_reason`` and deleted. Returns the deleted children's trial ids."""
        deleted = []
        for tid, run_id in list(self.children.items()):
            if tid not in ends:
                self.client.set_tag(run_id, "tune_div.error", lost_reason)
                self.client.set_terminated(run_id, "FAILED")
                self.client.delete_run(run_id)
                del self.children[tid]
                deleted.append(tid)
                continue
            status, last, error = ends[tid]
            if status != TrialState.UNFINISHED and self.client.get_run(run_id).info.status == "RUNNING":
                self.finish_child(tid, status, last, error)
        return deleted

    def child_runs(self):
        return self.client.search_runs(
            [self.experiment_id], f"tags.mlflow.parentRunId = '{self.parent_run_id}'", max_results=5000
        )

    def end_parent(self, status: str) -> None:
        for run_id in self.children.values():
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, "KILLED")
        self.client.set_terminated(self.parent_run_id, status)

    def log_parent_metrics(self, metrics: dict[str, float]) -> None:
        ts = int(time.time() * 1000)
        self.client.log_batch(
            self.parent_run_id, metrics=[metric(k, v, 0, ts) for k, v in numeric(metrics, None).items()]
        )

    def log_front(
        self,
        rows: list[dict[str, Any]],
        table: dict[str, Any],
        files: list[Path],
        robust: str = "",
        baseline: dict[str, Any] | None = None,
    ) -> None:
        """Parent metrics and artifacts, the front as the parent's Markdown description (``robust`` says what
        its robust numbers are), the ``pareto`` tag of every child and, once the naive ``baseline`` is
        known, each child's ``final_audit_lift_over_naive``."""
        note = front_markdown(table, self.experiment_id, self.children, robust or "as measured", baseline)
        self.client.set_tag(self.parent_run_id, NOTE_TAG, note)
        self.log_parent_metrics(
            {
                **(
                    {"lift_hypervolume": table["lift_hypervolume"]} if table.get("lift_hypervolume") is not None else {}
                ),
                "hypervolume": table["hypervolume"],
                "front_size": len(table["front"]),
                "trials_finished": sum(r["status"] == TrialState.TERMINATED for r in rows),
            }
        )
        ts = int(time.time() * 1000)
        for r in rows:  # only tags that changed: this runs at every trial end, over every trial
            run_id = self.children.get(str(r["trial_id"]))
            if run_id and r.get("audit_lift_over_naive") is not None:
                lift = {k: r.get(k) for k in LIFT_METRICS}
                self.client.log_batch(
                    run_id, metrics=[metric(f"final_{k}", v, 0, ts) for k, v in numeric(lift, None).items()]
                )
            tags = (
                "true" if r.get("pareto") else "false",
                r.get("eligibility", ""),
                "true" if r.get("knee") else "false",
            )
            if run_id and self.front_tags.get(run_id) != tags:
                self.client.log_batch(
                    run_id, tags=[tag("pareto", tags[0]), tag("tune_div.eligibility", tags[1]), tag("knee", tags[2])]
                )
                self.front_tags[run_id] = tags
        self.log_files(files)

    def log_files(self, files: list[Path]) -> None:
        """Files and folders (by their name) as artifacts of the parent."""
        for f in files:
            if f.is_file():
                self.client.log_artifact(self.parent_run_id, str(f))
            elif f.is_dir():
                self.client.log_artifacts(self.parent_run_id, str(f), artifact_path=f.name)

    # -- children ----------------------------------------------------------------------------------
    def child(self, trial_id: str, config: TrialConfig, config_doc: Callable[[str], dict[str, Any]]) -> str:
        """The child run of ``trial_id`` (created once; RUNNING again on resume), with its params and
        ``config.yaml`` = ``config_doc(run_id)`` (the trial in the exported-config format)."""
        if trial_id in self.children:
            self.client.update_run(self.children[trial_id], status="RUNNING")
            return self.children[trial_id]
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial_id}",
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                "tune_div.role": CHILD_ROLE,
                "tune_div.trial_id": trial_id,
                "status": "RUNNING",
            },
        )
        run_id = run.info.run_id
        params = {
            **flat_params("hparams.", config.hparams),
            **flat_params("train.", config.train),
            **flat_params("", config.logged_params()),
        }
        self.client.log_batch(run_id, params=[param(k, v) for k, v in params.items()])
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "config.yaml"
            path.write_text(yaml.safe_dump(config_doc(run_id), sort_keys=False))
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
        self.client.log_batch(
            run_id, metrics=[metric(k, v, step, ts) for k, v in numeric(metrics).items() if k not in FINAL_ONLY]
        )
        self.client.set_tag(run_id, "flags", metrics.get("flags", ""))
        self.logged_step[run_id] = step

    def log_final(self, trial_id: str, metrics: dict[str, float]) -> None:
        """More ``final_*`` metrics on a finished child (the front's test-split audit, after the search)."""
        run_id = self.children.get(trial_id)
        if run_id is not None:
            ts = int(time.time() * 1000)
            self.client.log_batch(
                run_id, metrics=[metric(f"final_{k}", v, 0, ts) for k, v in numeric(metrics, None).items()]
            )

    def log_confirmation(self, trial_id: str, seed: int, metrics: dict[str, Any] | None, error: str = "") -> None:
        """The run of ``trial_id`` retrained with ``seed`` (search/confirm.py), nested under the trial's run:
        its final validation and test metrics, FINISHED; FAILED with the reason when it failed. Found
        again by its tags, so a resumed confirmation logs each seed once."""
        parent = self.children.get(trial_id)
        if parent is None:
            return
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.mlflow.parentRunId = '{parent}' and tags.`{CONFIRM_SEED_TAG}` = '{seed}'",
            max_results=1,
        )
        if found and found[0].info.status == "FINISHED":
            return
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = self.client.create_run(
                self.experiment_id,
                run_name=f"trial-{trial_id}-seed-{seed}",
                tags={
                    "mlflow.parentRunId": parent,
                    "tune_div.role": CONFIRM_ROLE,
                    "tune_div.trial_id": trial_id,
                    CONFIRM_SEED_TAG: str(seed),
                },
            ).info.run_id
            self.client.log_batch(run_id, params=[param("seed", str(seed))])
        if metrics:
            finals = {f"final_{k}": v for k, v in numeric(metrics).items() if k.startswith(("val_", "test_"))}
            self.client.log_batch(run_id, metrics=[metric(k, v, 0, int(time.time() * 1000)) for k, v in finals.items()])
        if error:
            self.client.set_tag(run_id, "tune_div.error", error[:5000])
        self.client.set_terminated(run_id, "FAILED" if error or not metrics else "FINISHED")

    def finish_child(self, trial_id: str, status: str, last: dict[str, Any] | None, error: str = "") -> None:
        run_id = self.children.get(trial_id)
        if run_id is None:
            return
        if last:
            finals = {f"final_{k}": v for k, v in numeric(last).items() if k.startswith(("val_", "test_"))}
            self.client.log_batch(run_id, metrics=[metric(k, v, 0, int(time.time() * 1000)) for k, v in finals.items()])
        self.client.set_tag(run_id, "status", status)
        if error:
            self.client.set_tag(run_id, "tune_div.error", error[:5000])
        if states.is_stopped(status):  # stopped at a rung by the scheduler
            self.client.set_tag(run_id, STOPPED_TAG, states.stopped_epoch(status))
        self.client.set_terminated(run_id, states.mlflow_end(status))


def tag(k, v):
    from mlflow.entities import RunTag

    return RunTag(k, v)


def param(k, v):
    from mlflow.entities import Param

    return Param(k, v)
