"""Ray Tune callbacks of a search: one live line per trial and epoch, and the MLflow mirror.

Both are plain importable classes; Ray pickles them with the experiment, so a resumed search gets
them back (the MLflow one re-reads its child runs from the store, see ``tracking.SearchTracker``).
"""

from __future__ import annotations

from typing import Any

from ray import tune

from ..progress import SearchClock
from ..tracking import SearchTracker
from ..train import config_file
from . import pareto, states
from .results import hparams_text, robust_label, trial_error
from .searcher import link_run
from .settings import FINAL, Settings
from .states import TrialState
from .trainable import ERROR_KEY
from .trial_config import TrialConfig


def trial_doc(s: Settings, trial_id: str, config: TrialConfig, parent_run_id: str, run_id: str) -> dict[str, Any]:
    """The trial in the exported-config format (what ``tune-div train --config`` retrains)."""
    return config_file.document(
        config.train_config(),
        objective=config.objective_block(),
        source=config_file.provenance(s.mlflow_experiment, parent_run_id, run_id, trial_id, s.mlflow_uri),
    )


def stop_status(result: dict | None) -> str | None:
    """``STOPPED@<epoch>`` for a trial that completed before its last epoch (the scheduler stopped it)."""
    if result and not result.get(FINAL) and result.get("epoch") is not None:
        return states.stopped(result["epoch"])
    return None


class RetryPolicy(tune.Callback):
    """Which failures Ray retries (``FailureConfig(max_failures=--max-retries)``): a lost worker process or
    node, from the trial's last checkpoint; never an error of the trial's own code (a divergence, a bug),
    which would fail again. The trainable reports such an error (``trial_error``) before raising it, and
    this turns retries off for that trial before Ray decides (Ray reads ``Trial.max_failures`` when the
    failure arrives, after this result)."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if ERROR_KEY in result:
            trial.max_failures = 0


class TrialProgress(tune.Callback):
    """Prints ``[trial] hparams  epoch e/E  clean ...  proxy ...`` per epoch (``audit ...`` after the last
    one), and trial ends. The proxy is labelled as such: it is not the number the front is made of.

    An epoch's line is printed when Ray has registered its checkpoint (``on_checkpoint``), not when its
    result arrives: Ray registers a function trainable's checkpoint in a separate step after the result,
    and a worker lost between the two is retried from the checkpoint before. A printed epoch is one a
    retry will not train again.

    Each epoch line ends with the search's progress: trials done, running and left of ``samples``, and
    the time left (:class:`tune_div.progress.SearchClock`)."""

    def __init__(self, epochs: int, quiet: bool, samples: int = 0):
        self.epochs, self.quiet = epochs, quiet
        self.clock = SearchClock(samples, epochs)

    def setup(self, **info):
        self.clock.start()  # also after a resume: the rate counts this process's epochs only

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        result = trial.last_result or {}
        if self.quiet or ERROR_KEY in result or "epoch" not in result:
            return
        hp = hparams_text(TrialConfig.from_dict(trial.config).sampled())
        extra = "".join(
            f"  {label} {result[key]:.4f}"
            for label, key in (("proxy", "val_proxy_acc"), ("bb", "val_blackbox_acc"), ("audit", "val_audit_acc"))
            if key in result
        )
        flags = f"  FLAGS {result['flags']}" if result.get("flags") else ""
        self.clock.tick()
        print(
            f"[{trial.trial_id}] {hp}  epoch {result['epoch']}/{self.epochs}  clean {result['val_clean_acc']:.4f}"
            f"{extra}  {result['epoch_time_s']:.1f}s{flags}  | {self.progress(trials)}",
            flush=True,
        )

    def progress(self, trials) -> str:
        done = [t for t in trials if str(t.status) in (TrialState.TERMINATED, TrialState.ERROR)]
        running = [t for t in trials if str(t.status) in ("RUNNING", "PAUSED")]  # PENDING ones count as left
        at = [int((t.last_result or {}).get("epoch") or 0) for t in running]
        return self.clock.line(len(done), len(running), at)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not self.quiet:
            print(f"[{trial.trial_id}] {stop_status(trial.last_result) or 'finished'}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"[{trial.trial_id}] FAILED: {trial_error(trial)}", flush=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        registered = trial.latest_checkpoint_result  # what Ray restores from, not the last result seen
        epoch = registered.metrics.get("epoch") if registered is not None else None
        print(
            f"[{trial.trial_id}] worker lost ({trial_error(trial)}); retry "
            f"{trial.run_metadata.num_failures}/{trial.max_failures} from "
            f"{f'the checkpoint of epoch {epoch}' if epoch else 'the start'}",
            flush=True,
        )


class MLflowLogger(tune.Callback):
    """Mirrors the search into MLflow as it runs (parent + one nested run per trial)."""

    def __init__(self, settings: Settings, tracker: SearchTracker):
        self.settings, self.tracker = settings, tracker
        self.last: dict[str, dict] = {}
        self.status: dict[str, str] = {}

    def setup(self, **info):
        self.tracker.start_parent(self.settings.experiment, {}, {})  # resume: re-attach, never duplicate

    def on_trial_start(self, iteration, trials, trial, **info):
        s, parent = self.settings, self.tracker.parent_run_id
        config = TrialConfig.from_dict(trial.config)
        run_id = self.tracker.child(
            trial.trial_id, config, lambda run_id: trial_doc(s, trial.trial_id, config, parent, run_id)
        )
        link_run(s.study_url, s.experiment, trial.trial_id, run_id)  # the dashboard's way to the run

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if ERROR_KEY in result:
            return
        self.last[trial.trial_id] = result
        self.tracker.log_epoch(trial.trial_id, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = self.last.get(trial.trial_id) or trial.last_result
        self.status[trial.trial_id] = stop_status(last) or TrialState.TERMINATED
        self.tracker.finish_child(trial.trial_id, self.status[trial.trial_id], last)
        self.refresh(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.status[trial.trial_id] = TrialState.ERROR
        self.tracker.finish_child(trial.trial_id, TrialState.ERROR, None, trial_error(trial))
        self.refresh(trials)

    def refresh(self, trials) -> None:
        """The parent's front metrics and every child's ``pareto`` tag, after each trial end."""
        metrics = self.settings.metrics
        rows = []
        for t in trials:
            m = self.last.get(t.trial_id) or t.last_result or {}
            status = self.status.get(t.trial_id) or (TrialState.TERMINATED if m.get(FINAL) else str(t.status))
            rows.append(
                {
                    "trial_id": t.trial_id,
                    "status": status,
                    "flags": m.get("flags", ""),
                    "hparams": dict(TrialConfig.from_dict(t.config).hparams) if t.config else {},
                    **{k: m.get(k) for k in (*metrics, "val_proxy_acc")},
                }
            )
        table = pareto.pareto_table(rows, objectives=(metrics[0], metrics[1]), clean_floor=self.settings.clean_floor)
        self.tracker.log_front(rows, table, [], robust_label(self.settings))
