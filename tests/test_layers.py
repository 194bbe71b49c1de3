"""The house's walls: each layer of src/ginlab imports only from below (read from the code), the readers load
no torch, and Lightning's private names are used in one module only, on the version they were tested with."""

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import ROOT, env

SRC = ROOT / "src"
PACKAGE = SRC / "ginlab"

# What each layer may import (besides itself). Read top to bottom: the flow of the package.
ALLOWED = {
    "errors": set(),
    "processes": set(),
    "runfolder": {"errors", "processes"},
    "registry": {"errors"},
    "config": {"errors", "registry"},
    "data": {"errors", "config", "registry"},
    "models": {"errors", "config", "registry"},
    "health": {"errors", "processes", "runfolder", "config"},
    "training": {"errors", "processes", "runfolder", "registry", "config", "data", "models", "health"},
    "workers": {"processes", "training"},  # the server imports training; the client only processes
    "caches": {"runfolder"},  # the runfolder writer (atomic replace), imported only when a cache is written
    "analysis": {"errors", "runfolder", "config", "caches"},
    "experiments": {
        "errors",
        "processes",
        "runfolder",
        "config",
        "analysis",
        "training",
        "health",
        "workers",
    },
    "sync": {"errors", "processes"},
    "board": {"errors", "runfolder", "config", "caches", "analysis", "experiments"},
}
# Importing these must not load torch or Lightning (analysis scripts, bin/runs.py, the board start at once).
TORCH_FREE = [
    "ginlab",
    "ginlab.errors",
    "ginlab.runfolder",
    "ginlab.config",
    "ginlab.analysis",
    "ginlab.health.watchdog",  # a small process beside every run that notifies
    "ginlab.workers.client",  # the runner that starts runs stays light; the warm process imports torch
]
LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning_fabric", "lightning")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """The modules `name` imports (at the top and inside functions), absolute."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "ginlab" and len(parts) > 1 else None


def test_every_module_belongs_to_a_layer():
    unknown = sorted(m for m in modules() if m != "ginlab" and layer(m) not in ALLOWED)
    assert not unknown, f"modules outside the layers of ALLOWED (add their layer there, in order): {unknown}"


def test_each_layer_imports_only_from_below():
    known = modules()
    wrong = []
    for name, path in known.items():
        own = layer(name)
        if own is None:
            continue
        for target in imports(name, path):
            other = layer(target)
            if other is not None and other != own and other not in ALLOWED[own]:
                wrong.append(f"{name} imports {target} ({own} may import {sorted(ALLOWED[own])})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    tool = ROOT.parent / "shared" / "tools" / "import_cycles.py"
    if not tool.exists():
        pytest.skip("the shared import-cycle tool is not beside the project")
    out = subprocess.run([sys.executable, str(tool), str(SRC), "ginlab"], capture_output=True, text=True)
    assert " 0 circles" in out.stdout, out.stdout


@pytest.mark.parametrize("module", TORCH_FREE)
def test_readers_load_neither_torch_nor_lightning(module):
    code = (
        f"import sys, {module}\n"
        f"heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', {LIGHTNING_PACKAGES!r:s}[0], "
        f"'lightning_fabric', 'lightning')]\n"
        "print(','.join(sorted(heavy)[:5]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {module} loads {out.stdout.strip()}"


def test_lightning_private_names_are_used_in_one_module_only():
    from ginlab.training import lightning_internals

    home = PACKAGE / "training" / "lightning_internals.py"
    attributes = set(lightning_internals.PRIVATE_ATTRIBUTES)
    offenders = []
    for name, path in modules().items():
        if path == home:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIGHTNING_PACKAGES:
                offenders += [
                    f"{name}: from {node.module} import {a.name}" for a in node.names if a.name[0] == "_"
                ]
                if any(part.startswith("_") for part in node.module.split(".")):
                    offenders.append(f"{name}: from {node.module} import ...")
            elif isinstance(node, ast.Attribute) and node.attr in attributes:
                offenders.append(f"{name}: .{node.attr} (line {node.lineno})")
            elif isinstance(node, ast.Constant) and node.value in attributes:
                offenders.append(f"{name}: {node.value!r} (line {node.lineno})")
    assert not offenders, "Lightning-private names outside lightning_internals.py:\n" + "\n".join(offenders)


def test_every_listed_private_name_exists_in_the_installed_lightning():
    from ginlab.training import lightning_internals

    missing = []
    for where, name in lightning_internals.PRIVATE_NAMES:
        module_name, _, owner = where.partition(":")
        try:
            target = importlib.import_module(where)
        except ImportError:
            module_name, _, owner = where.rpartition(".")
            target = getattr(importlib.import_module(module_name), owner)
        if isinstance(target, type):
            # Instance attributes (set in __init__) are found in its source; class attributes directly.
            import inspect

            present = hasattr(target, name) or any(
                f".{name}" in inspect.getsource(cls) for cls in target.__mro__ if cls.__module__ != "builtins"
            )
        else:
            present = hasattr(target, name)
        if not present:
            missing.append(f"{where}.{name}")
    assert not missing, f"Lightning no longer has: {missing}; update ginlab/training/lightning_internals.py"


def test_the_lean_path_runs_only_on_the_tested_lightning_version(monkeypatch):
    import pytorch_lightning as pl

    from ginlab.training import lightning_internals
    from ginlab.training.trainer import lean_obstacles

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=1)
    assert pl.__version__ == lightning_internals.TESTED_VERSION, "requirements.txt pins the tested version"
    assert isinstance(lightning_internals.install_epoch_loop(trainer, lean_obstacles),
                      lightning_internals.LeanEpochLoop)  # fmt: skip
    monkeypatch.setattr(pl, "__version__", "9.9.9")
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lightning_internals.install_epoch_loop(trainer, lean_obstacles) is None
    assert any("tested with pytorch-lightning 2.6.6" in str(w.message) for w in caught)
    assert not isinstance(trainer.fit_loop.epoch_loop, lightning_internals.LeanEpochLoop)
