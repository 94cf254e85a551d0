"""What a person sees: ``tune-div ui`` and ``tune-div ui --optuna`` on a real smoke search's store, loaded
in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium).

The screenshots go to the test's temporary folder, or to ``$TUNE_DIV_SCREENSHOTS`` when it is set:
``TUNE_DIV_SCREENSHOTS=docs/images pytest tests/test_browser.py`` makes the README's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
INSTALL = "install it with scripts/setup.sh as root, or: apt-get install chromium chromium-driver"
WAIT = 60  # seconds for an element to render on a loaded 2-core machine


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM and DRIVER, f"no Chromium or chromedriver on PATH; {INSTALL}"
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(WAIT)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("TUNE_DIV_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_ui(args: list[str]) -> tuple[subprocess.Popen, str]:
    """``tune-div ui ARGS`` as a user starts it; returns the process and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tune_div", "ui", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    line = proc.stdout.readline()
    found = re.search(r"(http://\S+)", line)
    if not found:
        proc.kill()
        raise AssertionError(f"tune-div ui printed no URL: {line!r} {proc.communicate(timeout=30)[0][-2000:]}")
    return proc, found.group(1)


def stop_ui(proc: subprocess.Popen) -> str:
    proc.terminate()  # SIGTERM: the server's whole group stops (tests/test_ui.py)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    return out


def wait_for(condition, what: str, timeout: float = WAIT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not seen in the browser within {timeout:.0f} s: {what}")


def body_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def present_now(driver, by: str, selector: str) -> list:
    """The elements there now: ``find_elements`` under the implicit wait would wait all of ``WAIT`` for
    an element that a page may or may not show."""
    driver.implicitly_wait(2)
    try:
        return driver.find_elements(by, selector)
    finally:
        driver.implicitly_wait(WAIT)


def close_assistant(driver) -> None:
    """MLflow 3.17 opens its assistant panel on first visit; a person closes it, and so does the test."""
    from selenium.webdriver.common.by import By

    for button in present_now(driver, By.CSS_SELECTOR, "button[data-component-id='mlflow.assistant.chat_panel.close']"):
        if button.is_displayed():
            button.click()


def mlflow_records(storage: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smd-mnist")
    runs = client.search_runs([exp.experiment_id], "tags.`tune_div.role` = 'search'")
    children = client.search_runs([exp.experiment_id], "tags.`tune_div.role` = 'trial'")
    return exp, runs[0], children


def test_the_mlflow_ui_opens_on_the_search_with_its_front_trials_and_plot(smoke, browser, shots, free_port):
    from selenium.webdriver.common.by import By

    exp, parent, children = mlflow_records(smoke["storage"])
    front = json.loads((smoke["exp"] / "pareto.json").read_text())
    proc, url = start_ui(["--storage", str(smoke["storage"]), "--port", str(free_port)])
    try:
        # the printed URL is the search's experiment in Model-training mode
        assert url == f"http://127.0.0.1:{free_port}/#/experiments/{exp.experiment_id}?workflowType=machine_learning"
        browser.get(url)
        parent_row = browser.find_element(By.CSS_SELECTOR, f"[role='row'][row-id='{parent.info.run_id}']")
        assert "e2e" in parent_row.text
        text = body_text(browser)
        assert "Evaluation runs" not in text and "Traces / Latency" not in text  # not the GenAI pages
        assert "tune_div searches of smd-mnist" in text  # the experiment's description
        close_assistant(browser)
        parent_row.find_element(By.CSS_SELECTOR, "button").click()  # expand the search into its trials
        for c in children:
            row = browser.find_element(By.CSS_SELECTOR, f"[role='row'][row-id='{c.info.run_id}']")
            assert row.text.startswith(c.info.run_name) or c.info.run_name in row.text
        browser.save_screenshot(str(shots / "mlflow_experiment.png"))

        # the parent run: its description renders the front as a table whose rows link to the trial runs
        base = url.split("/#/")[0]
        browser.get(f"{base}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning")
        table = browser.find_element(By.XPATH, "//table[.//th[normalize-space()='lift over naive']]")
        close_assistant(browser)
        for more in present_now(browser, By.XPATH, "//*[normalize-space(text())='Show more']"):
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", more)
            more.click()  # the description opens folded
        cells = [
            [td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in table.find_elements(By.TAG_NAME, "tr")
        ]
        cells = [c for c in cells if c]
        off = [r for r in front["confirmed"] if not r["pareto"]]  # seed-confirmed from just off the front
        assert len(cells) == len(front["front"]) + len(off) + 1 and cells[-1][0] == "naive baseline"
        run_of = {c.data.tags["tune_div.trial_id"]: c.info.run_id for c in children}
        for member in front["front"]:
            (row,) = [c for c in cells if c[0].split()[0] == member["trial_id"]]
            robust = (
                f"{member['val_robust_acc']:.4f} [{member['val_robust_acc_ci_low']:.3f}, "
                f"{member['val_robust_acc_ci_high']:.3f}]"
            )  # the value and its 95% interval
            assert row[1:3] == [f"{member['val_clean_acc']:.4f}", robust]
            link = table.find_element(By.LINK_TEXT, member["trial_id"])
            assert f"/runs/{run_of[member['trial_id']]}" in link.get_attribute("href")
        knee = [c for c in cells if "knee" in c[0]]
        assert [k[0].split()[0] for k in knee] == [front["knee"]]
        for c in children:  # the overview lists every trial as a child run
            browser.find_element(By.LINK_TEXT, c.info.run_name)
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", table)
        browser.save_screenshot(str(shots / "mlflow_front.png"))

        # the pareto.png artifact is previewed as an image
        browser.find_element(By.XPATH, "//*[normalize-space(text())='Artifacts']").click()
        browser.find_element(By.XPATH, "//*[normalize-space(text())='pareto.png']").click()
        image = wait_for(
            lambda: next(
                (
                    i
                    for i in browser.find_elements(By.CSS_SELECTOR, "img[src^='blob:']")
                    if browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)
                ),
                None,
            ),
            "the pareto.png preview",
        )
        assert browser.execute_script("return arguments[0].naturalWidth", image) >= 400
        browser.save_screenshot(str(shots / "mlflow_pareto.png"))
    finally:
        out = stop_ui(proc)
    assert "MLflow UI stopped" in out


def test_optuna_dashboard_serves_the_search_study(smoke, browser, shots, free_port):
    from selenium.webdriver.common.by import By

    _, _, children = mlflow_records(smoke["storage"])
    run_ids = {c.info.run_id for c in children}
    proc, url = start_ui(["--optuna", str(smoke["exp"]), "--port", str(free_port)])
    try:
        base = url.split("/dashboard")[0]
        summaries = json.loads(urllib.request.urlopen(f"{base}/api/studies", timeout=30).read())["study_summaries"]
        (study,) = [s for s in summaries if s["study_name"] == "e2e"]
        assert url == f"{base}/dashboard/studies/{study['study_id']}"
        assert {a["key"]: a["value"] for a in study["user_attrs"]}["mlflow_experiment"] == "smd-mnist"
        detail = json.loads(urllib.request.urlopen(f"{base}/api/studies/{study['study_id']}", timeout=30).read())
        assert detail["objective_names"] == ["val_clean_acc", "val_robust_acc"]
        attrs = [{a["key"]: a["value"] for a in t["user_attrs"]} for t in detail["trials"]]
        assert {a["mlflow_run_id"] for a in attrs} == run_ids
        assert all("val_audit_acc" in a and "val_proxy_acc" in a for a in attrs)

        browser.get(url)
        wait_for(lambda: "Pareto Front" in body_text(browser), "the Pareto-front plot")
        text = body_text(browser)
        assert "e2e" in text and "val_clean_acc" in text and "val_robust_acc" in text
        browser.find_element(By.CSS_SELECTOR, ".js-plotly-plot")  # the plot itself rendered
        browser.save_screenshot(str(shots / "optuna_dashboard.png"))
        browser.get(f"{url}/trials")
        wait_for(lambda: "mlflow_run_id" in body_text(browser), "a trial's MLflow run id")
        assert any(r in body_text(browser) for r in run_ids)
    finally:
        out = stop_ui(proc)
    assert "optuna-dashboard stopped" in out
