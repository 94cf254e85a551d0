"""Shared fixtures: an isolated cache, offline mode, the real MNIST folder, tiny hand-made ensembles."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Before tune_div is imported anywhere: never write to the user's cache, never try the network.
_SESSION_TMP = tempfile.mkdtemp(prefix="tune_div_tests_")
os.environ["TUNE_DIV_CACHE"] = os.path.join(_SESSION_TMP, "cache")
os.environ["TUNE_DIV_OFFLINE"] = "1"
os.environ.setdefault("RAY_TMPDIR", os.path.join(_SESSION_TMP, "ray"))


def _find_real_data() -> Path | None:
    for candidate in (os.environ.get("TUNE_DIV_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return None


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder with the real MNIST / Fashion-MNIST archives (read-only is fine).

    Skipped on a user's machine without it; on CI (CI=true) its absence is a failure.
    """
    root = _find_real_data()
    if root is None:
        msg = "real MNIST archives not found: set TUNE_DIV_DATA (see README, Offline data)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def trained_ensemble(real_data):
    """A 2-member naive lenet5 ensemble trained 1 epoch on 8,000 real MNIST images (~3 s), eval mode."""
    from tune_div.train import TrainConfig, Trainer

    trainer = Trainer(
        TrainConfig(defense="naive", data_dir=str(real_data), n_members=2, subset=8000, val_subset=500, epochs=1)
    )
    trainer.fit()
    return trainer.ensemble.cpu().eval()


@pytest.fixture(scope="session")
def eval_points(real_data):
    """200 fixed test points as float images in [0, 1] and labels."""
    from tune_div.eval import eval_subset

    return eval_subset("mnist", "test", 200, seed=0, root=str(real_data))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session, with logical resources: 16 CPUs and 8 GPUs
    (the GPUs exist only as schedulable resources; trials still compute on the CPU)."""
    import ray

    ray.init(num_cpus=16, num_gpus=8, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


SMOKE_FLOOR = 0.5  # the smoke search's clean floor: every 1-epoch trial clears it (its constraint is < 0)


@pytest.fixture(scope="session")
def smoke(ray_session, real_data, tmp_path_factory):
    """One real smoke search (3 SMD trials, 1 epoch, its winners confirmed with one fresh seed) shared by the
    tests of its outputs (the search's files, MLflow, the export, the UI in a browser)."""
    from tune_div.cli import search

    storage = tmp_path_factory.mktemp("smoke")
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = search.main(
            [
                "smd",
                "--budget",
                "smoke",
                "--samples",
                "3",
                "--concurrency",
                "2",
                "--epochs",
                "1",
                "--clean-floor",
                str(SMOKE_FLOOR),
                "--confirm",
                "1",
                "--data-dir",
                str(real_data),
                "--storage-path",
                str(storage),
                "--experiment",
                "e2e",
            ]
        )
    assert rc == 0, buf.getvalue()[-2000:]
    return {"storage": storage, "exp": storage / "e2e", "out": buf.getvalue()}
