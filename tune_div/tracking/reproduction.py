"""The MLflow record of a paper reproduction: one run in experiment ``reproduce-<protocol>`` with the
settings as params, every measured cell as a metric, the rank agreement, and the table files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .tracker import flat_params, metric, param, tag
from .uri import artifact_root_for, client_for, get_or_create_experiment, quiet_mlflow

REPRODUCTION_ROLE = "reproduction"


def metric_key(row: dict[str, Any]) -> str:
    """``white_box/pgd/eps_0.1/smd``: MLflow keys allow letters, digits, ``_ - . / space``."""
    return f"{row['threat']}/{row['column']}/eps_{row['eps']}/{row['method']}"


def log_reproduction(uri: str, protocol: str, doc: dict[str, Any], files: list[Path]) -> str:
    """Log ``doc`` (a protocol's result) and its ``files``; returns the run id."""
    with quiet_mlflow():
        return _log_reproduction(uri, protocol, doc, files)


def _log_reproduction(uri: str, protocol: str, doc: dict[str, Any], files: list[Path]) -> str:
    client = client_for(uri)
    exp_id = get_or_create_experiment(client, f"reproduce-{protocol}", artifact_root_for(uri))
    s = doc["settings"]
    run = client.create_run(
        exp_id,
        run_name=f"{s['dataset']}-{s['budget']}-{s['epochs']}ep-{s['seeds']}seeds",
        tags={
            "tune_div.role": REPRODUCTION_ROLE,
            "protocol": protocol,
            "dataset": s["dataset"],
            "machine": doc["machine"],
            "command": doc.get("command", ""),
        },
    )
    run_id = run.info.run_id
    ts = int(time.time() * 1000)
    params = flat_params("", {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in s.items()})
    metrics = [metric(metric_key(r), r["measured"] / 100, 0, ts) for r in doc["rows"]]
    metrics += [
        metric(f"kendall_tau/{threat}/{attack}/eps_{eps}", tau, 0, ts)
        for threat, per_eps in doc["kendall_tau"].items()
        for eps, per_attack in per_eps.items()
        for attack, tau in per_attack.items()
        if tau is not None
    ]
    client.log_batch(
        run_id, params=[param(k, v) for k, v in params.items()], tags=[tag("tune_div.seconds", f"{doc['seconds']:.0f}")]
    )
    for i in range(0, len(metrics), 1000):  # MLflow's limit per batch
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    for f in files:
        client.log_artifact(run_id, str(f))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_claims(uri: str, rows: list[dict[str, Any]], files: list[Path]) -> str:
    """The claims ledger as one run of experiment ``reproduce-claims``: a count per verdict and the files."""
    with quiet_mlflow():
        client = client_for(uri)
        exp_id = get_or_create_experiment(client, "reproduce-claims", artifact_root_for(uri))
        run_id = client.create_run(exp_id, run_name="claims", tags={"tune_div.role": "claims"}).info.run_id
        ts = int(time.time() * 1000)
        verdicts = sorted({r["verdict"] for r in rows})
        counts = {v: sum(r["verdict"] == v for r in rows) for v in verdicts}
        client.log_batch(run_id, metrics=[metric(f"claims/{v.replace(' ', '_')}", n, 0, ts) for v, n in counts.items()])
        for f in files:
            client.log_artifact(run_id, str(f))
        client.set_terminated(run_id, "FINISHED")
        return run_id
