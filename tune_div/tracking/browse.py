"""What a person sees in the MLflow UI: the experiment in Model-training mode, the front as Markdown in
the parent run's description, and the URL that opens on the latest search.

MLflow 3 shows an experiment either as GenAI (traces, evaluations) or as model training (runs, metrics,
charts). It chooses by the experiment tag ``mlflow.experimentKind`` and, for one page, by the URL
parameter ``workflowType=machine_learning``; tune_div sets both. MLflow renders the tag
``mlflow.note.content`` of a run or an experiment as its Markdown description.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
NOTE_TAG = "mlflow.note.content"
WORKFLOW = "workflowType=machine_learning"

EXPERIMENT_NOTE = (
    "tune_div searches of **{name}**. Each search is a parent run (role `search`): its description holds "
    "the Pareto front of clean against robust accuracy, with links to the trials, which are its child "
    "runs (role `trial`). Artifacts of the parent: `pareto.png`, `pareto.json`, `trials.csv`, "
    "`search_space.yaml` and the exported configs."
)


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's page in Model-training mode, on the server at ``base`` (``http://host:port``)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?{WORKFLOW}"


def run_link(experiment_id: str, run_id: str) -> str:
    """A link to a run that works from any page of the same UI (the UI routes on the URL fragment), in
    Model-training mode: a run page reads the mode from its URL, not from the experiment."""
    return f"#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW}"


def _acc(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else "–"


def _ci(row: Mapping[str, Any], key: str) -> str:
    """``0.5850 [0.541, 0.628]``: the value and its 95% interval, where the row has them."""
    from ..eval.intervals import interval_of

    ci = interval_of(row, key)
    return f"{ci.value:.4f} [{ci.low:.3f}, {ci.high:.3f}]" if ci is not None else _acc(row.get(key))


def _confirmed(row: Mapping[str, Any], key: str) -> str:
    """A seed-confirmed member's mean ± std robust accuracy, test lift and seed count (else a dash)."""
    mean, std = row.get(f"confirmed_{key}"), row.get(f"confirmed_{key}_std")
    if mean is None:
        return " – |"
    lift = row.get("confirmed_lift")
    lift_text = "" if lift is None else f", {lift:+.4f}" + ("*" if row.get("confirmed_lift_significant") else "")
    return f" {mean:.4f} ± {std or 0:.3f}{lift_text} ({len(row.get('confirm_seeds') or [])}) |"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _hparams(row: Mapping[str, Any]) -> str:
    from ..search.results import hparams_text  # the printed table's; imported late (results imports tracking)

    values = {**(row.get("hparams") or {}), **(row.get("train") or {})}
    return f"`{_cell(hparams_text(values))}`" if values else "defaults"


def front_markdown(
    table: Mapping[str, Any],
    experiment_id: str,
    children: Mapping[str, str],
    robust: str,
    baseline: Mapping[str, Any] | None = None,
    title: str = "",
) -> str:
    """The front as a Markdown table: trial (a link to its run), clean, robust, proxy, lift over the naive
    baseline, hyperparameters; the knee marked; the baseline as a last row. ``table`` is
    :func:`tune_div.search.pareto.pareto_table`'s result, ``children`` maps trial ids to run ids,
    ``robust`` says what the robust numbers are (audited, or the proxy)."""
    x, y = table["objectives"]
    lines = [f"### {title}" if title else "### Pareto front", ""]
    lines.append(
        f"{len(table['front'])} trial(s) on the front of `{x}` against `{y}`; robust accuracy {robust}. "
        f"Hypervolume {table['hypervolume']:.4f} against {tuple(table['reference'])}."
    )
    confirmed = bool(table.get("confirmed")) or any(r.get(f"confirmed_{y}") is not None for r in table["front"])
    extra = " confirmed robust, test lift (seeds) |" if confirmed else ""
    lines += [
        "",
        f"| trial | clean | robust (95%) | proxy | lift over naive |{extra} hyperparameters |",
        "|---|---:|---:|---:|---:|" + ("---:|" if confirmed else "") + "---|",
    ]
    off = [r for r in table.get("confirmed", []) if not r.get("pareto")]  # confirmed from just off the front
    for r in sorted(table["front"], key=lambda row: -float(row[y])) + off:
        tid = str(r["trial_id"])
        run_id = children.get(tid)
        name = f"[{tid}]({run_link(experiment_id, run_id)})" if run_id else tid
        if r.get("knee"):
            name += " **knee**"
        if not r.get("pareto", True):
            name += " (off the front)"
        lift = r.get("audit_lift_over_naive")
        sig = "*" if r.get("audit_lift_p") is not None and r["audit_lift_p"] < 0.05 and (lift or 0) > 0 else ""
        lines.append(
            f"| {name} | {_acc(r.get(x))} | {_ci(r, y)} | {_acc(r.get('val_proxy_acc'))} | "
            f"{'–' if lift is None else f'{lift:+.4f}{sig}'} |{_confirmed(r, y) if confirmed else ''} {_hparams(r)} |"
        )
    if baseline:
        lines.append(
            f"| naive baseline | {_acc(baseline.get(x))} | {_ci(baseline, y)} | "
            f"{_acc(baseline.get('val_proxy_acc'))} | 0 (reference) |{' |' if confirmed else ''} "
            "undefended ensemble, same budget |"
        )
        lines += ["", "\\* lift significant at 0.05 (exact McNemar on the same points)."]
    if not table["front"]:
        lines.append("| (no eligible trial yet) | | | | | |")
    return "\n".join(lines) + "\n"


def latest_search(client) -> tuple[str, str] | None:
    """(experiment id, experiment name) of the most recently started search in the store, or None."""
    from .tracker import PARENT_ROLE

    experiments = client.search_experiments()
    if not experiments:
        return None
    runs = client.search_runs(
        [e.experiment_id for e in experiments],
        f"tags.`tune_div.role` = '{PARENT_ROLE}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    eid = runs[0].info.experiment_id
    return eid, next(e.name for e in experiments if e.experiment_id == eid)
