"""Where the MLflow records of a search live: the tracking URI, its artifact root, the client.

Default URI ``sqlite:///<storage>/mlflow.db`` (MLflow 3 refuses file stores), artifacts under
``<storage>/mlartifacts``; any URI is accepted (a server on a cluster: ``http://host:port``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError
from ..scoped import MLFLOW_QUIET, environ

SQLITE = "sqlite:///"


def default_uri(storage_path: str | Path) -> str:
    return f"{SQLITE}{Path(storage_path).expanduser().resolve() / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for any other kind of store."""
    return Path(uri[len(SQLITE) :]) if uri.startswith(SQLITE) else None


def artifact_root(storage_path: str | Path) -> str:
    return str(Path(storage_path).expanduser().resolve() / "mlartifacts")


def artifact_root_for(uri: str) -> str | None:
    """Next to the database for a sqlite store (``<storage>/mlartifacts``); the server's own otherwise."""
    db = sqlite_path(uri)
    return artifact_root(db.parent) if db is not None else None


def check_store(uri: str) -> None:
    """A one-line error if the store at ``uri`` exists but cannot be read (not a database, another
    program's, an incompatible version) or if a server does not answer. A sqlite file that does not
    exist yet is fine: MLflow creates it."""
    import socket
    from urllib.parse import urlparse

    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return
    if uri.startswith(("http://", "https://")):  # fail fast: MLflow retries an unreachable server for minutes
        url = urlparse(uri)
        try:
            socket.create_connection(
                (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=5
            ).close()
        except (OSError, ValueError):
            raise UserError(
                f"cannot reach the MLflow server at {uri}; start it (mlflow server) or check the URI"
            ) from None
    try:
        client_for(uri).search_experiments(max_results=1)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"MLflow store {uri} cannot be read ({first[:200]}); it is damaged, not an MLflow store, or "
            "from an incompatible MLflow version"
        ) from None


def require_store(uri: str, hint: str) -> None:
    """A one-line error if ``uri`` is a sqlite store whose file does not exist (nothing to read), or if
    the store cannot be read."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise UserError(f"no MLflow store at {db}; {hint}")
    check_store(uri)


def experiment_name(defense: str, dataset: str) -> str:
    return f"{defense}-{dataset}"


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow at WARNING for the block (warnings still show); its variables and logger restored after."""
    with environ(MLFLOW_QUIET):
        import mlflow  # noqa: F401  (configures its logger on import; the level below must come after)

        logger = logging.getLogger("mlflow")
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            logger.setLevel(level)


def client_for(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def get_or_create_experiment(client, name: str, artifact_root: str | None, description: str | None = None) -> str:
    """The id of experiment ``name``, created if missing. Either way it is marked as model training (so
    MLflow 3 shows runs and metrics, not its GenAI pages; ``browse.py``) and, if it has none, gets
    ``description``."""
    from .browse import KIND_TAG, MODEL_TRAINING, NOTE_TAG

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = f"{Path(artifact_root).resolve().as_uri()}/{name}" if artifact_root else None
        tags = {KIND_TAG: MODEL_TRAINING, **({NOTE_TAG: description} if description else {})}
        return client.create_experiment(name, artifact_location=location, tags=tags)
    if KIND_TAG not in exp.tags:  # made by an older tune_div or another client
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, MODEL_TRAINING)
    if description and NOTE_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, NOTE_TAG, description)
    return exp.experiment_id
