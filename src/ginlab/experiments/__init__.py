"""Experiments: a grid of bin/train.py runs, prepared, run locally or on SLURM, resumed and reported.

An experiment's main.py defines an `Experiment` and calls `main`; see experiments/tune_lr/main.py and
docs/experiments.md.

experiment   Experiment, ReportSpec, Run (one prepared grid point), the results folder's paths
grid         grid values -> named points
prepare      check the grid with gin; write experiment.json, jobs.txt, one .gin per run
backends/    what to do with each run (plan), local and SLURM backends
search/      hyperparameter searches (Optuna): space, study file, driver, launchers, status, report
status       what each prepared run's folder says, counted
progress     live counts and ETA while `run` works
report       tables, figures (figures.py) and summary.md
cli          the command line of every main.py: prepare | run | status | report
"""

from ginlab.experiments.cli import main
from ginlab.experiments.experiment import Experiment, ExperimentError, ReportSpec
from ginlab.experiments.prepare import load_prepared, prepare

__all__ = ["Experiment", "ExperimentError", "ReportSpec", "load_prepared", "main", "prepare"]
