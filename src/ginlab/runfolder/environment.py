"""What a run was computed with: Python, platform, every installed package, and the state of the code.

Read without importing the packages, from the names of their metadata folders on sys.path
(`torch-2.13.0+cpu.dist-info`): about a millisecond, where parsing every package's metadata takes a second.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

# The versions meta.json shows at a glance; environment.json has every package.
KEY_PACKAGES = {"torch": "torch", "pytorch_lightning": "pytorch-lightning", "gin": "gin-config"}


def installed_packages() -> dict[str, str]:
    """{normalized name: version} of every package importable by this interpreter (the first on sys.path wins),
    sorted by name. Names are normalized as pip compares them (PEP 503): "pytorch-lightning", "gin-config"."""
    packages: dict[str, str] = {}
    for folder in sys.path:
        try:
            entries = sorted(os.listdir(folder or "."))
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".dist-info"):
                name, _, version = entry[: -len(".dist-info")].partition("-")
            elif entry.endswith(".egg-info"):
                name, _, version = entry[: -len(".egg-info")].partition("-")
                version = version.split("-py")[0] or _egg_version(os.path.join(folder or ".", entry))
            else:
                continue
            packages.setdefault(re.sub(r"[-_.]+", "-", name).lower(), version)
    return dict(sorted(packages.items()))


def _egg_version(path: str) -> str:
    """The Version line of an egg-info's PKG-INFO (develop installs name no version in the folder)."""
    info = os.path.join(path, "PKG-INFO") if os.path.isdir(path) else path
    try:
        with open(info, encoding="utf-8") as f:
            for line in f:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def versions(packages: dict[str, str] | None = None) -> dict[str, str | None]:
    """Python's, ginlab's and the key packages' versions (for meta.json)."""
    import ginlab

    packages = installed_packages() if packages is None else packages
    found = {key: packages.get(dist) for key, dist in KEY_PACKAGES.items()}
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
