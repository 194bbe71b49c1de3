"""bin/train.py imports only what the run uses (benchmarks/startup.py measures the time; docs/architecture.md,
"Start-up")."""

import json
import subprocess
import sys

from conftest import ROOT, env

# What bin/train.py does before its run folder exists (configure, then build data and model), in a fresh
# process; then the modules it must not have imported. matplotlib and scipy are not among them: torchmetrics,
# which Lightning imports, imports them whenever they are installed.
SCRIPT = """
import json, sys
from ginlab.training.main import main  # what bin/train.py imports
from ginlab.training.configure import configure
from ginlab.training.loop import build_from_config

configure(sys.argv[1], ["configs/cnn.gin"], [])
build_from_config()
print(json.dumps(sorted(sys.modules)))
"""

NOT_NEEDED = {
    "sklearn": "the digits are read from scikit-learn's file, without importing it (pandas, pyarrow, joblib)",
    "pandas": "only evaluate's tables and the analysis need it",
    "pyarrow": "only the analysis cache needs it",
    "mlflow": "only a run with an MLflow tracking URI needs it",
    "apprise": "only notify URLs need it",
}


def test_a_run_starts_without_what_it_does_not_use(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "run")],
        capture_output=True, text=True, env=env(), cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    imported = {name.split(".")[0] for name in json.loads(proc.stdout.splitlines()[-1])}
    assert "pytorch_lightning" in imported and "gin" in imported  # the check itself works
    assert {name: why for name, why in NOT_NEEDED.items() if name in imported} == {}
    assert not (tmp_path / "run").exists()  # configure and build write nothing
