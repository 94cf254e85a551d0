"""tune_div: hyperparameter search for adversarially robust deep-ensemble defenses.

Ray Tune runs the trials, Optuna samples the hyperparameters, MLflow keeps the Pareto fronts of clean
against robust accuracy. See README.md and docs/design.md for the flow and the contracts.
"""

__version__ = "0.1.0"
