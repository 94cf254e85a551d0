"""Tracking: every MLflow read and write of the project.

``uri.py`` (store URI, artifact root, client) -> ``tracker.py`` (a search's parent and child runs, as
it runs) -> ``export.py`` (the best configs, from MLflow alone) -> ``retrain.py`` (a retrained config's
run and registered model) -> ``compare.py`` (several searches' fronts) with ``plots.py`` and
``server.py`` (the UI process).
"""

from .export import export_from_tracking, find_parent, trial_rows
from .plots import fronts_plot, pareto_plot
from .tracker import CHILD_ROLE, PARENT_ROLE, SearchTracker
from .uri import (
    artifact_root,
    artifact_root_for,
    check_store,
    client_for,
    default_uri,
    experiment_name,
    get_or_create_experiment,
    quiet_mlflow,
    require_store,
    sqlite_path,
)

__all__ = [
    "CHILD_ROLE",
    "PARENT_ROLE",
    "SearchTracker",
    "artifact_root",
    "artifact_root_for",
    "check_store",
    "client_for",
    "default_uri",
    "experiment_name",
    "export_from_tracking",
    "find_parent",
    "fronts_plot",
    "get_or_create_experiment",
    "pareto_plot",
    "quiet_mlflow",
    "require_store",
    "sqlite_path",
    "trial_rows",
]
