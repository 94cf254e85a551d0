"""How long is left: the ETA of a training and of a search, worked out by hand in each test."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tune_div.progress import EpochProgress, SearchClock, duration, remaining

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (44.6, "45s"), (60, "1m00s"), (725, "12m05s"), (11220, "3h07m")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_remaining_is_the_mean_epoch_time_times_the_epochs_left():
    assert remaining([], 3) is None
    assert remaining([10.0, 20.0], 4) == pytest.approx(60.0)


def test_without_a_terminal_each_line_ends_with_the_eta_and_no_bar_is_drawn(capsys):
    out = io.StringIO()
    with EpochProgress(4, "smd", stream=out) as p:
        for epoch, seconds in ((1, 10.0), (2, 30.0), (3, 20.0), (4, 20.0)):
            p.epoch(epoch, seconds, f"epoch {epoch}/4")
    # mean 10 x 3 left; mean 20 x 2; mean 20 x 1; nothing after the last
    assert out.getvalue().splitlines() == [
        "epoch 1/4, ETA 30s",
        "epoch 2/4, ETA 40s",
        "epoch 3/4, ETA 20s",
        "epoch 4/4",
    ]
    assert capsys.readouterr().err == ""


def test_on_a_terminal_a_bar_with_its_eta_runs_under_the_lines(capsys):
    out = io.StringIO()
    with EpochProgress(3, "smd seed 0", start=1, stream=out, bar=True) as p:
        p.epoch(2, 5.0, "epoch 2/3")
        p.epoch(3, 5.0, "epoch 3/3")
    assert out.getvalue().splitlines() == ["epoch 2/3, ETA 5s", "epoch 3/3"]
    err = capsys.readouterr().err
    assert "smd seed 0" in err and "3/3" in err and "epoch" in err  # tqdm's bar, on stderr


def test_a_new_total_starts_a_phase_whose_eta_counts_its_own_epochs(capsys):
    """Natural training of at most 2000 epochs that stopped early at 2, then 3 retraining epochs that
    each take ten times as long: the ETA is the retraining's, not the rest of the 2000."""
    out = io.StringIO()
    with EpochProgress(2000, "at", stream=out, bar=True) as p:
        p.epoch(1, 2.0, "epoch 1/2000")
        p.epoch(2, 2.0, "epoch 2/2000")
        p.epoch(1, 20.0, "retraining epoch 1/3", total=3)
        p.epoch(2, 40.0, "retraining epoch 2/3", total=3)
        p.epoch(3, 30.0, "retraining epoch 3/3", total=3)
    assert out.getvalue().splitlines() == [
        "epoch 1/2000, ETA 1h06m",  # 2 s x 1999
        "epoch 2/2000, ETA 1h06m",  # 2 s x 1998
        "retraining epoch 1/3, ETA 40s",  # 20 s x 2
        "retraining epoch 2/3, ETA 30s",  # 30 s x 1
        "retraining epoch 3/3",
    ]
    assert "3/3" in capsys.readouterr().err  # the bar was reset to the retraining's 3 epochs


def test_emit_sends_the_line_where_the_caller_logs():
    said = []
    EpochProgress(2, "x", stream=io.StringIO(), bar=False).epoch(1, 3.0, "epoch 1/2", emit=said.append)
    assert said == ["epoch 1/2, ETA 3s"]


def test_the_search_clock_counts_trials_and_the_epochs_still_to_run(monkeypatch):
    now = iter([0.0, 40.0])
    monkeypatch.setattr("tune_div.progress.time.monotonic", lambda: next(now))
    clock = SearchClock(samples=10, epochs=4)
    assert clock.line(0, 0, []) == "trials 0 done, 0 running, 10 left"  # no epoch yet: no estimate
    clock.start()
    for _ in range(8):
        clock.tick()
    # 40 s / 8 epochs = 5 s per trial-epoch; running at epochs 1 and 3 -> 3 + 1 left; 5 not started x 4 = 20
    assert clock.line(3, 2, [1, 3]) == "trials 3 done, 2 running, 5 left, ETA ~2m00s"


def test_tune_div_train_says_how_long_is_left(real_data, tmp_path):
    """The real command, its output a pipe (as under nohup): plain lines, each with the ETA."""
    cmd = [sys.executable, "-m", "tune_div", "train", "--defense", "naive", "--members", "2", "--epochs", "2",
           "--subset", "600", "--val-subset", "200", "--data-dir", str(real_data), "--no-mlflow",
           "--out", str(tmp_path / "r.json")]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2 and ", ETA " in lines[0] and ", ETA " not in lines[1]
    assert "epoch" not in p.stderr  # no bar when the output is not a terminal
