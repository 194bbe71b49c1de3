"""What a run was computed with: Python, platform, every installed package, and the state of the code.

Read without importing the packages (importlib.metadata): recording the environment costs milliseconds and
loads nothing, so it is the same whichever part of ginlab writes it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

# The versions meta.json shows at a glance; environment.json has every package.
KEY_PACKAGES = {"torch": "torch", "pytorch_lightning": "pytorch-lightning", "gin": "gin-config"}


def installed_packages() -> dict[str, str]:
    """{distribution name: version} of every package importable by this interpreter, sorted by name."""
    packages = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and name not in packages:  # the first on sys.path is the one imported
            packages[name] = dist.version
    return dict(sorted(packages.items(), key=lambda item: item[0].lower()))


def versions(packages: dict[str, str] | None = None) -> dict[str, str | None]:
    """Python's, ginlab's and the key packages' versions (for meta.json)."""
    import ginlab

    packages = installed_packages() if packages is None else packages
    lower = {name.lower(): version for name, version in packages.items()}
    found = {key: lower.get(dist) for key, dist in KEY_PACKAGES.items()}
    return {"python": platform.python_version(), **found, "ginlab": ginlab.__version__}


def environment() -> dict:
    """The content of environment.json: interpreter, platform and every installed package."""
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "prefix": sys.prefix,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
        "packages": installed_packages(),
    }


def git_state() -> tuple[dict, str | None]:
    """(commit, branch and dirtiness of the code, `git diff HEAD` when dirty, else None).

    The code is the repository that holds the ginlab package (a fork of ginlab, run from anywhere); for an
    installed package, the repository of the current folder.
    """
    commit, where = None, None
    for folder in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            break
        if out.returncode == 0 and out.stdout.strip():
            commit, where = out.stdout.strip(), folder
            break
    if commit is None:
        return {"commit": None, "branch": None, "dirty": None, "diff": None}, None

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=30
        ).stdout

    dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    state = {
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD").strip(),
        "dirty": dirty,
        "diff": "git.diff" if dirty else None,
    }
    return state, git("diff", "HEAD") if dirty else None
