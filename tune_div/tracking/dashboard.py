"""A search's Optuna study in optuna-dashboard (``tune-div ui --optuna [SEARCH_DIR]``).

Every search keeps its study in ``<storage>/<experiment>/optuna.db``, an Optuna RDB storage that
optuna-dashboard serves as it is: the Pareto-front plot, hyperparameter importances, each trial's
values and user attributes (its MLflow run, flags, audit and proxy; ``search/searcher.py``).
``python -m tune_div.tracking.dashboard STORAGE_URL HOST PORT`` is the server process ``tune-div ui``
starts; it runs optuna-dashboard's own server (``optuna_dashboard.run_server``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError

STUDY_FILE = "optuna.db"  # in every search folder (search/settings.py: Settings.study_path)


def study_file(storage: str | Path, experiment: str | None = None, folder: str | Path | None = None) -> Path:
    """The study of the search in ``folder``, of search ``experiment`` under ``storage``, or else of the
    most recently updated search under ``storage``; a one-line error if there is none."""
    if folder:
        path = Path(folder).expanduser() / STUDY_FILE
        if not path.is_file():
            raise UserError(f"no Optuna study at {path}; name a search's folder (it holds {STUDY_FILE})")
        return path.resolve()
    root = Path(storage).expanduser()
    if experiment:
        path = root / experiment / STUDY_FILE
        if not path.is_file():
            raise UserError(f"no search '{experiment}' under {root} (no {path}); check --experiment and --storage")
        return path.resolve()
    found = sorted(root.glob(f"*/{STUDY_FILE}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no search under {root} (no */{STUDY_FILE}); run a search first or pass --storage")
    return found[-1].resolve()


def storage_url(path: Path) -> str:
    return f"sqlite:///{path}"


def study_page(path: Path) -> str:
    """The dashboard path of the search's study (``/dashboard/studies/<id>``); the study list if the file
    holds several and none is named after its folder."""
    import optuna

    url = storage_url(path)
    names = optuna.get_all_study_names(url)
    name = path.parent.name if path.parent.name in names else (names[0] if len(names) == 1 else None)
    if name is None:
        return "/dashboard"
    return f"/dashboard/studies/{optuna.storages.RDBStorage(url).get_study_id_from_name(name)}"


def command(path: Path, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "tune_div.tracking.dashboard", storage_url(path), host, str(port)]


def main(argv: list[str] | None = None) -> None:
    from optuna_dashboard import run_server

    url, host, port = argv if argv is not None else sys.argv[1:]
    run_server(url, host=host, port=int(port))


if __name__ == "__main__":
    main()
