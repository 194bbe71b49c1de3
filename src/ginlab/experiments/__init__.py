"""Experiments: a grid of bin/train.py runs, prepared, run locally or on SLURM, resumed and reported.

An experiment's main.py defines an `Experiment` and calls `main`; see experiments/tune_lr/main.py and
docs/experiments.md.
"""

from ginlab.experiments.cli import main
from ginlab.experiments.experiment import Experiment, ExperimentError, ReportSpec, load_prepared, prepare

__all__ = ["Experiment", "ExperimentError", "ReportSpec", "load_prepared", "main", "prepare"]
