"""The environment: one set of pins, a valid conda file with the same pins, an idempotent e.sh."""

import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def requirement_pins() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_every_requirement_is_pinned_exactly():
    pins = requirement_pins()
    assert pins and all("==" in pin for pin in pins), pins
    assert "torch==2.13.0" in pins  # an unpinned torch would pull a multi-GB CUDA build
    assert not any(pin.startswith("neptune") for pin in pins)


def test_conda_file_is_valid_and_has_the_same_pins():
    env = yaml.safe_load((ROOT / "e.yml").read_text())
    assert env["name"] == "ginlab" and env["channels"]
    deps = env["dependencies"]
    assert any(str(d).startswith("python=3.11") for d in deps)
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == requirement_pins()


def test_pyproject_reads_the_same_requirements():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "dependencies" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]


def test_sourcing_e_sh_twice_is_instant_and_changes_nothing():
    script = (
        f'cd {ROOT} && source e.sh && echo "$PYTHONPATH|$DATA_DIR|$RESULTS_DIR|$VIRTUAL_ENV" '
        f'&& source e.sh && echo "$PYTHONPATH|$DATA_DIR|$RESULTS_DIR|$VIRTUAL_ENV"'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATA_DIR", "RESULTS_DIR")}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()[-2:]
    assert first == second
    pythonpath, data_dir, results_dir, _ = first.split("|")
    assert pythonpath.split(os.pathsep)[0] == str(ROOT / "src")
    assert data_dir == str(ROOT / "data") and results_dir == str(ROOT / "results")
    assert "installing" not in out.stderr  # the environment already exists: nothing is rebuilt


def test_e_sh_keeps_the_users_data_and_results_dirs(tmp_path):
    script = (
        f"cd {ROOT} && DATA_DIR={tmp_path}/d RESULTS_DIR={tmp_path}/r && source e.sh "
        f"&& echo $DATA_DIR $RESULTS_DIR"
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == [f"{tmp_path}/d", f"{tmp_path}/r"]
