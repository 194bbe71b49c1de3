"""The errors every layer raises, and the exit codes every program and job script uses.

A `ConfigError` or `RunFolderError` is meant for the researcher as it is: its message says what was wrong,
what was expected and how to fix it. Programs print it without a traceback and exit with `ExitCode.USAGE`;
anything else is a failure whose traceback is kept.
"""

import enum


class GinlabError(Exception):
    """Base of the errors whose message is written for the researcher."""


class ConfigError(GinlabError, ValueError):
    """A configuration that cannot be run (bad name, bad value, missing data). Nothing was written."""


class RunFolderError(GinlabError, ValueError):
    """A folder that cannot be used or read as a run folder as asked; the message names it and the problem."""


class ExitCode(enum.IntEnum):
    """How bin/train.py (and every program that runs training) ends; also what `meta.json` records.

    The SLURM job script and the experiment backends read these numbers: they are part of the interface.
    """

    FINISHED = 0  # the run finished (or, with reload="auto", had finished before)
    FAILED = 1  # failed during training: meta.json has the error and traceback
    USAGE = 2  # usage or configuration error: nothing was written
    INTERRUPTED = 3  # stopped by SIGTERM, SIGUSR1 or Ctrl-C after writing a checkpoint: reload continues it
    DIVERGED = 4  # the training loss became NaN or infinite: the run stopped at the last finite checkpoint
