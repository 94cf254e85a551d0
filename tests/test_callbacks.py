"""The search's progress lines: an epoch is printed once Ray registered its checkpoint, and a retry
names the checkpoint Ray restores, not the last result it saw."""

from __future__ import annotations

from types import SimpleNamespace

from tune_div.search.callbacks import TrialProgress
from tune_div.search.trial_config import Objective, TrialConfig

CONFIG = TrialConfig(
    defense="smd",
    base={},
    objective=Objective("pgd_cw_logits", 0.1, 10, 20, 0, None),
    sanity_n=0,
    test_n=None,
    rungs=(),
    hparams={"lam": 0.5},
).to_dict()


def fake_trial(last_epoch: int, registered_epoch: int | None):
    result = {"epoch": last_epoch, "val_clean_acc": 0.9, "val_proxy_acc": 0.5, "epoch_time_s": 1.0}
    return SimpleNamespace(
        trial_id="t1",
        status="RUNNING",
        config=CONFIG,
        last_result=result,
        max_failures=2,
        error_file=None,
        error="RayActorError: the worker died",
        run_metadata=SimpleNamespace(num_failures=1),
        latest_checkpoint_result=None
        if registered_epoch is None
        else SimpleNamespace(metrics={**result, "epoch": registered_epoch}),
    )


def test_an_epoch_line_is_printed_when_its_checkpoint_is_registered_not_when_its_result_arrives(capsys, monkeypatch):
    clock = iter([100.0, 130.0])  # the search started at 100 s; this epoch line is printed at 130 s
    monkeypatch.setattr("tune_div.progress.time.monotonic", lambda: next(clock))
    progress, trial = TrialProgress(3, quiet=False, samples=4), fake_trial(2, 1)
    done = SimpleNamespace(status="TERMINATED", last_result={"epoch": 3})
    progress.setup()
    progress.on_trial_result(0, [trial, done], trial, trial.last_result)
    assert capsys.readouterr().out == ""
    progress.on_checkpoint(0, [trial, done], trial, checkpoint=None)
    # 30 s for the one epoch seen; left: 1 epoch of t1 and 2 trials x 3 epochs not started = 7 -> 210 s
    assert capsys.readouterr().out.strip() == (
        "[t1] lam=0.5  epoch 2/3  clean 0.9000  proxy 0.5000  1.0s  | trials 1 done, 1 running, 2 left, ETA ~3m30s"
    )
    TrialProgress(3, quiet=True).on_checkpoint(0, [trial], trial, checkpoint=None)
    assert capsys.readouterr().out == ""


def test_a_retry_names_the_epoch_ray_restores(capsys):
    progress = TrialProgress(3, quiet=False)
    for registered, says in ((1, "from the checkpoint of epoch 1"), (None, "from the start")):
        trial = fake_trial(2, registered)  # epoch 2's result was seen, its checkpoint not (yet) registered
        progress.on_trial_recover(0, [trial], trial)
        line = capsys.readouterr().out.strip()
        assert line.startswith("[t1] worker lost (") and line.endswith(f"retry 1/2 {says}"), line
