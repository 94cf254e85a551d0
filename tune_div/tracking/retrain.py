"""The MLflow record of a retrained exported config: a run linked to its source trial, the ensemble
logged as an MLflow model and registered under an alias (``best-robust``, ``knee``).

Everything goes through the client like the rest of ``tracking/``, except ``mlflow.pytorch.log_model``:
in MLflow 3.17 it takes no run id and links the model to the active run, so that one call runs inside
``mlflow.start_run(run_id=...)`` of the run the client created.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .tracker import RETRAIN_ROLE, flat_params, metric, numeric, param
from .uri import artifact_root_for, client_for, get_or_create_experiment

ALIASES = {"best_robust": "best-robust", "knee": "knee"}  # exported file name -> registered-model alias


def alias_for(config_path: str | None, alias: str | None) -> str | None:
    if alias:
        return alias
    return ALIASES.get(Path(config_path).stem if config_path else "")


def log_retrain(
    uri: str,
    cfg_dict: dict[str, Any],
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
    ensemble: torch.nn.Module,
    example: torch.Tensor,
    source: dict[str, Any],
    register: str,
    config_path: str | None = None,
    alias: str | None = None,
) -> tuple[str, str | None, str | None]:
    """Log the run and the model; returns ``(run_id, model version, alias)``."""
    import mlflow

    client = client_for(uri)
    exp_id = get_or_create_experiment(client, source.get("experiment") or register, artifact_root_for(uri))
    tags = {
        "tune_div.role": RETRAIN_ROLE,
        "defense": cfg_dict["defense"],
        "dataset": cfg_dict["dataset"],
        **{f"tune_div.source_{k}": str(v) for k, v in source.items() if k != "tracking_uri" and v is not None},
    }
    run = client.create_run(exp_id, run_name=f"retrain-{source.get('trial_id') or cfg_dict['defense']}", tags=tags)
    run_id = run.info.run_id
    params = flat_params("", {k: v for k, v in cfg_dict.items() if k not in ("data_dir", "hparams")})
    params.update(flat_params("hparams.", cfg_dict["hparams"]))
    ts = int(time.time() * 1000)
    batch = [
        metric(k, v, int(h["epoch"]), ts) for h in history for k, v in numeric(h, prefixes=None).items() if k != "epoch"
    ]
    batch += [metric(k, v, 0, ts) for k, v in numeric(metrics, prefixes=None).items()]
    client.log_batch(run_id, params=[param(k, v) for k, v in params.items()])
    for i in range(0, len(batch), 1000):  # MLflow's limit per batch
        client.log_batch(run_id, metrics=batch[i : i + 1000])
    if config_path:
        client.log_artifact(run_id, config_path)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            ensemble,
            name="model",
            registered_model_name=register,
            serialization_format="pickle",
            input_example=example.numpy(),
        )
    version = info.registered_model_version
    alias = alias_for(config_path, alias)
    if alias and version is not None:
        client.set_registered_model_alias(register, alias, str(version))
    return run_id, version, alias
