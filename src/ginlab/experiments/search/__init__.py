"""Hyperparameter searches that survive kills: random, TPE and grid sampling, ASHA, Hyperband and median
pruning (Optuna), over ordinary run folders. An experiment declares `search=Search(...)` and uses the grid's
verbs (docs/experiments.md, "Searches"); experiments/search_cnn/ is the worked example.

space        the search space: Uniform, LogUniform, IntRange, Choice
spec         Search (sampler, pruner, budget, objective) and the Optuna objects it builds
trials       the search's files; a trial as a prepared run (TrialRun), its config, its metric per epoch
study        the study file (Optuna's journal): one line per change, draws and decisions computed in memory
prepare      check the search with gin and against its study; write search/search.json
launch       the interface between the driver and the machines (start / ended / active / stop)
launch_local, launch_slurm   bin/train.py processes on this machine; SLURM jobs
driver       `run`: draw, train segment by segment, decide, prune, complete; continues after any kill
status       trials done / running / pruned / failed / left, best so far, ETA, records vs run folders
report       best configuration, optimization history, parallel coordinates, importance, curves, compute
cli          the verbs, called from experiments/cli.py
"""

from ginlab.experiments.search.report import load_trials
from ginlab.experiments.search.space import Choice, IntRange, LogUniform, Uniform
from ginlab.experiments.search.spec import ASHA, TPE, Hyperband, Median, Search

__all__ = [
    "ASHA",
    "TPE",
    "Choice",
    "Hyperband",
    "IntRange",
    "LogUniform",
    "Median",
    "Search",
    "Uniform",
    "load_trials",
]
