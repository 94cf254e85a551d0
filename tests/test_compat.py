"""The compatibility shims act only when the known import failure happens, and fix it."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch

from tune_div import compat


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_torchvision_shim_applies_exactly_when_plain_import_fails():
    plain = _run("import torchvision")
    plain_fails = plain.returncode != 0
    if plain_fails:
        assert "torchvision::nms does not exist" in plain.stderr, plain.stderr[-500:]
    shimmed = _run(
        "from tune_div import compat; compat.import_torchvision(); import torchvision.datasets, "
        "torchvision.transforms; print(sorted(compat.APPLIED))"
    )
    assert shimmed.returncode == 0, shimmed.stderr[-1000:]
    assert ("torchvision" in shimmed.stdout) == plain_fails


def test_advertorch_shim_applies_exactly_when_zero_gradients_is_missing():
    # Checked in a fresh process: in this one an earlier test may already have applied the shim.
    probe = _run(
        "import importlib; m = importlib.import_module('torch.autograd.gradcheck'); print(hasattr(m, 'zero_gradients'))"
    )
    missing = probe.stdout.strip() == "False"
    shimmed = _run(
        "from tune_div import compat; at = compat.import_advertorch(); at.LinfPGDAttack; print(sorted(compat.APPLIED))"
    )
    assert shimmed.returncode == 0, shimmed.stderr[-1000:]
    assert ("advertorch" in shimmed.stdout) == missing


def test_shims_do_nothing_when_import_succeeds(monkeypatch):
    """On a machine where the imports work (a CUDA machine), the real module comes back untouched."""
    sentinel = types.ModuleType("torchvision")
    calls = []

    def working_import(name):
        calls.append(name)
        return sentinel

    monkeypatch.setattr(compat, "APPLIED", set())
    monkeypatch.setattr(compat, "_define_torchvision_stub_ops", lambda: pytest.fail("shim ran on a working import"))
    monkeypatch.setattr(compat, "_purge", lambda pkg: pytest.fail("modules purged on a working import"))
    assert compat.import_torchvision(importer=working_import) is sentinel
    assert calls == ["torchvision"] and compat.APPLIED == set()


def test_advertorch_shim_does_nothing_when_import_succeeds(monkeypatch):
    compat.import_torchvision()  # its own shim may be needed here; this test is about advertorch's
    sentinel = types.ModuleType("advertorch.attacks")
    monkeypatch.setattr(compat, "APPLIED", set())
    monkeypatch.setattr(compat, "_purge", lambda pkg: pytest.fail("modules purged on a working import"))
    assert compat.import_advertorch(importer=lambda name: sentinel) is sentinel
    assert "advertorch" not in compat.APPLIED


@pytest.mark.parametrize("error", [RuntimeError("some other torchvision failure"), ImportError("no module x")])
def test_unrelated_import_errors_are_not_swallowed(error):
    def broken(name):
        raise error

    with pytest.raises(type(error), match=str(error)):
        if isinstance(error, RuntimeError):
            compat.import_torchvision(importer=broken)
        else:
            compat.import_advertorch(importer=broken)


def test_zero_gradients_matches_the_removed_torch_helper():
    a = torch.ones(3, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    (a.sum() * 2 + b.sum() * 3).backward()
    compat.zero_gradients([a, b])
    assert torch.equal(a.grad, torch.zeros(3)) and torch.equal(b.grad, torch.zeros(2))
    c = torch.ones(1, requires_grad=True)
    compat.zero_gradients(c)  # no grad yet: nothing to do, no error
    assert c.grad is None
