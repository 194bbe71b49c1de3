"""The run-folder format in one place: its version, its file names and the statuses a run can have.

The whole format is described in docs/run-folder.md; every reader and the writer take the names from here.
"""

from __future__ import annotations

import os
from pathlib import Path

# Version 2 (ginlab 0.2): environment.json; statuses "diverged" and "pruned"; meta.json "last_checkpoint";
# the history's "lr" is the rate the epoch trained with (version 1 wrote the next epoch's rate).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)

META = "meta.json"
ENVIRONMENT = "environment.json"
CONFIG_GIN = "config.gin"
CONFIG_JSON = "config.json"
CONFIGS = "configs"
BINDINGS = "bindings.gin"
GIT_DIFF = "git.diff"
LOG = "log.txt"
HISTORY = "history.jsonl"
STEPS = "steps.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
EVALUATIONS = "evaluations"
PROFILE = "profile"
LOCK = ".lock"
LOCK_INFO = ".lock.json"

# Files whose presence marks a folder as a run folder that lost its meta.json.
RUN_FILES = (META, CONFIG_JSON, CONFIG_GIN, HISTORY, SUMMARY)
# What ginlab creates in a folder before its meta.json: a folder holding only these is still empty.
BEFORE_META = (LOCK, LOCK_INFO)
# What a fresh run writes before its meta.json, which it writes last: a folder with meta.json holds all of
# them. A start killed before its meta.json leaves only these (and temporary files of its atomic writes) beside
# its lock info, and a new start replaces them.
CREATION = (ENVIRONMENT, GIT_DIFF, CONFIGS)

# Statuses written in meta.json. A reader also derives "stale": written "running", but the process is gone.
RUNNING, FINISHED, FAILED, INTERRUPTED, DIVERGED, PRUNED = (
    "running", "finished", "failed", "interrupted", "diverged", "pruned",
)  # fmt: skip
STALE = "stale"
STATUSES = (RUNNING, STALE, FINISHED, FAILED, INTERRUPTED, DIVERGED, PRUNED)
ENDED = (FINISHED, FAILED, INTERRUPTED, DIVERGED, PRUNED)  # written when the process ends
# history.jsonl columns that say what an epoch cost in resources (memory, CPU, data wait ...), not how the
# model did: the Telemetry callback writes them; load_runs shows their maxima.
TELEMETRY_PREFIX = "sys_"
# A "running" run whose heartbeat is older than this died without saying so.
STALE_AFTER_SECONDS = 300.0


class RunPaths:
    """The paths of one run folder's files, by their role: `RunPaths("results/x").history`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta = self.path / META
        self.environment = self.path / ENVIRONMENT
        self.config_gin = self.path / CONFIG_GIN
        self.config_json = self.path / CONFIG_JSON
        self.configs = self.path / CONFIGS
        self.bindings = self.configs / BINDINGS
        self.git_diff = self.path / GIT_DIFF
        self.log = self.path / LOG
        self.history = self.path / HISTORY
        self.steps = self.path / STEPS
        self.summary = self.path / SUMMARY
        self.checkpoints = self.path / CHECKPOINTS
        self.tensorboard = self.path / TENSORBOARD
        self.evaluations = self.path / EVALUATIONS
        self.profile = self.path / PROFILE
        self.lock_file = self.path / LOCK
        self.lock_info = self.path / LOCK_INFO

    def config_files(self) -> list[Path]:
        """The config files the run was started with, in order, then its bindings file."""
        return sorted(self.configs.glob("*.gin")) if self.configs.is_dir() else []
