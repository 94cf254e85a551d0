"""How long is left: the progress of long commands (``train``, ``reproduce``, ``search``).

On a terminal, :class:`EpochProgress` keeps a tqdm bar with its ETA on stderr under the epoch lines; on
anything else (a log file, a pipe, a batch job) it prints no bar, and each epoch line ends with the
estimate instead, so a ``nohup`` log says how long is left too. Estimates are the mean time of the epochs
seen so far times the epochs left.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import IO, Any


def duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h07m``: short enough for the end of a line."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def remaining(times: Sequence[float], left: int) -> float | None:
    """The time ``left`` more units take at the mean of ``times`` (None before the first)."""
    return sum(times) / len(times) * left if times else None


def is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class EpochProgress:
    """The progress of one training of ``total`` epochs, labelled ``label``. Call :meth:`epoch` after each
    epoch with its time and its line; it prints the line with the ETA appended (above the bar on a
    terminal) and returns what it printed. ``start`` is the epoch it resumes after."""

    def __init__(
        self, total: int, label: str, start: int = 0, stream: IO[str] | None = None, bar: bool | None = None
    ) -> None:
        self.total, self.label, self.start = total, label, start
        self.stream = stream if stream is not None else sys.stdout
        self.times: list[float] = []
        self._bar: Any = None
        if bar if bar is not None else (is_terminal(sys.stderr) and is_terminal(self.stream)):
            from tqdm import tqdm

            # mininterval 0: an epoch takes seconds, so every update is drawn
            self._bar = tqdm(
                total=total, initial=start, desc=label, unit="epoch", file=sys.stderr, leave=False, mininterval=0
            )

    def epoch(self, epoch: int, seconds: float, line: str, emit: Any = None, total: int | None = None) -> str:
        """Record epoch ``epoch`` (1-based) of ``seconds``; print ``line`` + the ETA with ``emit`` (default:
        this progress's stream) and return it. A new ``total`` starts a new phase (the retraining after
        natural training, ``Trainer.phase``): its ETA counts its own epochs at its own pace."""
        if total is not None and total != self.total:
            self.total, self.times = total, []
            if self._bar is not None:
                self._bar.reset(total=total)
        self.times.append(seconds)
        left = remaining(self.times, self.total - epoch)
        text = f"{line}, ETA {duration(left)}" if left is not None and epoch < self.total else line
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
            self._bar.update(epoch - self._bar.n)
        elif emit is not None:
            emit(text)
        else:
            print(text, file=self.stream, flush=True)
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SearchClock:
    """Trials done, running and left, and the time left, for a search of ``samples`` trials of ``epochs``
    epochs each. The rate is the wall time per trial-epoch since :meth:`start` (so it counts parallel
    trials, and a resumed search does not count the epochs it inherited). With a scheduler that stops
    trials at rungs the estimate is an upper bound: it assumes every trial still going runs every epoch."""

    def __init__(self, samples: int, epochs: int) -> None:
        self.samples, self.epochs = samples, epochs
        self.started: float | None = None
        self.seen = 0

    def start(self) -> None:
        self.started, self.seen = time.monotonic(), 0

    def tick(self) -> None:
        """One more epoch finished, of any trial."""
        if self.started is None:
            self.start()
        self.seen += 1

    def line(self, done: int, running: int, at: Sequence[int]) -> str:
        """``trials 3 done, 2 running, 11 left, ETA ~4m10s``; ``at`` is the last epoch of each running trial."""
        left = max(0, self.samples - done - running)
        text = f"trials {done} done, {running} running, {left} left"
        if self.started is not None and self.seen:
            rate = (time.monotonic() - self.started) / self.seen
            todo = sum(max(0, self.epochs - e) for e in at) + left * self.epochs
            text += f", ETA ~{duration(rate * todo)}" if todo else ""
        return text
