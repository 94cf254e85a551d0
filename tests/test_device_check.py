"""The GPU check rehearsed on the CPU: ``benchmarks/device_check.py --device cpu --quick`` runs every section
without Ray, MLflow, Optuna or moocore, its carry list is exactly what the GPU machine lacks, and its
result turns into defaults that tune_div reads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tune_div import defenses, device_defaults
from tune_div.train.precision import precision_context

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_check.sh"
# The GPU machine's Python packages (the device tool's package list, read 2026-11-17), as the module names
# the check imports; what it lacks must travel as wheels.
ON_GPU_MACHINE = {
    "torch",
    "torchgen",
    "torchvision",
    "numpy",
    "scipy",
    "sympy",
    "mpmath",
    "PIL",
    "typing_extensions",
    "tqdm",
    "yaml",
    "requests",
    "charset_normalizer",
    "urllib3",
    "idna",
    "certifi",
    "cython_runtime",
    "filelock",
    "jinja2",
    "markupsafe",
    "networkx",
    "fsspec",
    "matplotlib",
    "pandas",
}
NOT_THERE = ("ray", "mlflow", "optuna", "moocore")

RUNNER = """
import importlib.abc, json, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("not on the GPU machine: " + name)
sys.meta_path.insert(0, Block())
sys.argv = ["device_check.py", *{argv!r}]
try:
    runpy.run_path({script!r}, run_name="__main__")
finally:
    std = set(sys.stdlib_module_names)
    ours = {{"tune_div", "__main__", "device_check", "step_time", "trial_packing"}}  # the checkout
    mods = sorted({{m.split(".")[0] for m in sys.modules}} - std - ours)
    open({mods_file!r}, "w").write(json.dumps([m for m in mods if not m.startswith("_")]))
"""


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, real_data):
    out = tmp_path_factory.mktemp("device_check")
    mods_file = out / "modules.json"
    code = RUNNER.format(
        blocked=set(NOT_THERE),
        argv=["--device", "cpu", "--quick", "--out", str(out)],
        script=str(ROOT / "benchmarks" / "device_check.py"),
        mods_file=str(mods_file),
    )
    env = {**os.environ, "TUNE_DIV_DATA": str(real_data), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return (
        json.loads((out / "device_check.json").read_text()),
        (out / "device_check.md").read_text(),
        set(json.loads(mods_file.read_text())),
        proc.stdout,
    )


def test_every_section_runs_on_the_cpu_without_ray_mlflow_optuna_or_moocore(rehearsal):
    result, text, _, _ = rehearsal
    sections = result["sections"]
    assert list(sections) == ["equivalence", "training", "attacks", "steps", "packing", "compile"]
    for name, sec in sections.items():
        assert "failed" not in sec, (name, sec)
    assert sections["compile"]["skipped"].startswith("--quick on a CPU")
    assert result["device_type"] == "cpu" and result["quick"] is True
    for heading in ("## equivalence", "## training", "## attacks", "## steps", "## packing", "## Defaults"):
        assert heading in text


def test_equivalence_covers_every_defense_on_both_paths_and_cpu_against_cpu_is_exact(rehearsal):
    eq = rehearsal[0]["sections"]["equivalence"]
    seen = {(r["defense"], r["execution"]) for r in eq["rows"]}
    assert seen == {(d, e) for d in defenses.names() for e in ("looped", "fused")}
    assert eq["ok"]
    for r in eq["rows"]:
        assert r["loss"] == r["gradients"] == r["running_stats"] == 0.0, r  # the same device: the same numbers
        assert r["fused_ran"] == (r["execution"] == "fused")
    distilled = [r for r in eq["rows"] if "distill_gradient" in r]
    assert {r["defense"] for r in distilled} == {"dverge", "smd_plus"}


def test_training_attacks_steps_and_packing_report_numbers(rehearsal):
    s = rehearsal[0]["sections"]
    for row in s["training"]["rows"]:
        assert row["val_acc_difference"] == 0.0  # same seed, same device, same threads
        assert 0.0 < row["device"]["val_clean_acc"] <= 1.0
    attacks = s["attacks"]
    assert attacks["n"] == 100 and attacks["pgd10_acc_difference"] == 0.0
    assert attacks["device"]["audit_acc"] <= attacks["device"]["pgd10_acc"] <= attacks["device"]["clean_acc"]
    assert all(r["ms"] > 0 for r in s["steps"]["rows"])
    assert [r["trials"] for r in s["packing"]["rows"]] == [1, 2]


def test_the_carry_list_is_exactly_what_the_gpu_machine_lacks(rehearsal):
    imported = rehearsal[2]
    wheels = re.search(r'^WHEELS="([^"]*)"', SCRIPT.read_text(), re.M).group(1).split()
    carried = {w.split("==")[0] for w in wheels}
    assert not set(NOT_THERE) & imported
    assert imported - ON_GPU_MACHINE == carried, "carry what the check imports and the GPU machine lacks"
    assert 'carry:     [".whl", ".device_data"]' in SCRIPT.read_text()


def test_decide_and_apply_turn_a_result_into_the_defaults_tune_div_reads(rehearsal, tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import device_check

    result = json.loads(json.dumps(rehearsal[0]))
    result.update(device_type="cuda", quick=False)
    rows = []
    for name, fused_ms in (("naive", 8.0), ("smd", 18.0)):
        for execution, ms in (("looped", 10.0 if name == "naive" else 20.0), ("fused", fused_ms)):
            rows += [
                {"defense": name, "execution": execution, "batch": 128, "precision": "fp32", "ms": ms},
                {"defense": name, "execution": execution, "batch": 128, "precision": "tf32", "ms": ms / 1.5},
            ]
    result["sections"]["steps"]["rows"] = rows
    result["sections"]["packing"]["rows"] = [
        {"defense": "naive", "trials": k, "steps_per_s": rate} for k, rate in ((1, 100.0), (4, 390.0), (8, 380.0))
    ]
    decided = device_check.decide(result)
    # fused 0.8x and 0.9x looped; 8 trials within 10 % of the best total; TF32 1.5x faster
    assert decided["fused"] == ["lenet5"] and decided["gpus_per_trial"] == 0.125 and decided["precision"] == "tf32"
    result["sections"]["packing"]["rows"][2]["steps_per_s"] = 300.0
    assert device_check.decide(result)["gpus_per_trial"] == 0.25
    result["sections"]["equivalence"]["ok"] = False
    assert device_check.decide(result)["fused"] == []  # never faster-but-wrong

    path = tmp_path / "device_defaults.json"
    monkeypatch.setattr(device_defaults, "DEFAULTS_FILE", path)
    device_defaults.table.cache_clear()
    try:
        device_defaults.write_defaults(decided, source="a test", path=path)
        assert device_defaults.fused_faster()["cuda"] == ("lenet5",)
        assert device_defaults.fused_faster()["cpu"] == ("lenet5",)  # the built-in CPU entry stays
        assert device_defaults.gpus_per_trial() == 0.125 and device_defaults.precision("cuda") == "tf32"
    finally:
        monkeypatch.undo()
        device_defaults.table.cache_clear()
    assert device_defaults.gpus_per_trial() == 1.0 and device_defaults.precision("cuda") == "fp32"


def test_apply_refuses_a_quick_rehearsal(rehearsal, tmp_path):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(rehearsal[0]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--apply", str(f)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "rehearsal" in proc.stderr and "Traceback" not in proc.stderr


def test_precision_context_restores_the_process_switches():
    cpu = torch.device("cpu")
    with precision_context("bf16", cpu):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with precision_context("tf32", cpu):  # TF32 is a CUDA format: nothing changes on a CPU
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_precision_is_a_checked_training_option_that_exports_and_keeps_cache_keys():
    from tune_div.errors import UserError
    from tune_div.eval.surrogate import config_key
    from tune_div.train import TrainConfig, config_file

    plain = TrainConfig(defense="smd", epochs=1)
    assert plain.precision == "auto" and "precision" not in config_file.document(plain)["train"]
    # a model cached before the field existed keeps its key: 'auto' is not hashed
    assert config_key(plain) == config_key(TrainConfig(defense="smd", epochs=1, precision="auto"))
    tf32 = TrainConfig(defense="smd", epochs=1, precision="tf32")
    assert config_key(tf32) != config_key(plain) and tf32.identity() == plain.identity()
    doc = config_file.document(tf32)
    assert doc["train"]["precision"] == "tf32" and config_file.to_train_config(doc).precision == "tf32"
    with pytest.raises(UserError, match="precision"):
        TrainConfig(precision="fp16")
