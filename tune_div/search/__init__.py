"""The search: Ray Tune runs the trials, Optuna samples them, every trial is the same trainable.

``settings.py`` (validated settings, budgets, objectives) -> ``space.py`` (the search spaces, shipped
from the top-level ``search_spaces/``) -> ``trainable.py`` (one trial: train, proxy objective, sanity flags,
checkpoints) -> ``searcher.py`` (the Optuna searcher that tells FAIL and the clean-floor constraint)
-> ``callbacks.py`` (live progress, MLflow mirroring) -> ``runner.py`` (Ray connection, the Tuner,
publishing) -> ``results.py`` (rows, files, the printed table) with ``pareto.py`` (front, hypervolume,
knee). ``python -m tune_div.search`` is the search command (``tune_div.cli.search``). Importing this
package does not import Ray.
"""
