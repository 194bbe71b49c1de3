"""From config files and bindings to a run that may start: parse, decide fresh or reload, and for a reload check
the configuration against the saved run. Nothing is written here; every refusal is a ConfigError or a
RunFolderError (exit code 2).
"""

from __future__ import annotations

import os

import gin

from ginlab.config import Change, check_choice, classify, flat_config, parse, split_bindings
from ginlab.errors import ConfigError, RunFolderError
from ginlab.runfolder import (
    RunFolder,
    RunPaths,
    Start,
    nothing_to_do,
    plan_start,
    read_config_json,
    read_meta,
)
from ginlab.training.distributed import is_main_process
from ginlab.training.loop import Launch

# Rank 0 of a DDP run decides fresh or reload; the processes it starts (same command line) take its decision.
START_VARIABLE = "GINLAB_START"


def configure(save_dir: str, config_files: list[str], binding_strings: list[str], command=()) -> Launch:
    """Parse and check the configuration; on reload, check it against the saved run and layer it on top.

    Raises:
        ConfigError, RunFolderError: the run cannot start as asked (the message says why and what to do).
    """
    import ginlab.training  # noqa: F401  (every configurable gin must know before parsing)

    bindings = split_bindings(binding_strings)
    parse(config_files, bindings)
    reload = _query("training_loop.reload", False)
    check_choice("training_loop.reload", reload, [False, True, "auto"])
    if not config_files and reload is False:
        raise ConfigError(
            "No CONFIG file given: a fresh run needs at least one .gin file (e.g. configs/cnn.gin); only a reload "
            "(-b training_loop.reload=True) takes its configuration from the run folder."
        )
    if is_main_process():
        start = plan_start(save_dir, reload)
        os.environ[START_VARIABLE] = start.action
    else:  # another process of a DDP run: rank 0 has decided, and may have created the folder since
        action = os.environ.get(START_VARIABLE, "reload" if reload is True else "fresh")
        start = Start(action, read_meta(save_dir) if action == "reload" else None)
    if start.action == "fresh":
        return Launch(list(command), list(config_files), bindings, start)

    if start.meta.get("format_version") == 1:
        raise RunFolderError(
            f"{save_dir} was written by ginlab 0.1 (run-folder format_version 1), whose history and settings mean "
            f"other things; this ginlab reads and evaluates it but does not continue it, so that its record stays "
            f"one format. Continue it with the code it was started with (git commit "
            f"{(start.meta.get('git') or {}).get('commit')}), or start it again in a new folder."
        )
    if is_main_process():
        RunFolder(save_dir).check_logs_before_reload()  # a damaged history: refused before anything else
    changes = _reload_changes(save_dir, config_files, bindings)
    gin.bind_parameter("training_loop.reload", True)
    if reload == "auto" and nothing_to_do(save_dir, start.meta, _query("training_loop.n_epochs", 10)):
        start = Start("done", start.meta)
    return Launch(list(command), list(config_files), bindings, start, changes)


def _reload_changes(save_dir, config_files, bindings) -> list[Change]:
    """Check the reload's configuration against the run's, then parse it on top of the run's own config.

    Returns the changes to apply; raises ConfigError for changes a reload cannot make or was not allowed to.
    """
    run = RunPaths(save_dir)
    base = run.config_gin.read_text() if run.config_gin.exists() else _started_with(run)
    new = flat_config(operative=False)
    saved = read_config_json(save_dir)
    complete = saved is not None
    if saved is None:  # killed before config.json was written: what it was started with is the reference
        parse([], [], base_text=base)
        saved = flat_config(operative=False)
    parse(config_files, bindings, base_text=base)
    changes = [c for c in classify(saved, new, complete) if c.kind != "bookkeeping"]
    refused = [c for c in changes if c.kind == "refused"]
    if refused:
        raise ConfigError(
            f"Reload of {save_dir} refused: a run that continues from its checkpoint cannot change these, so "
            "its record would describe a run that did not happen:\n"
            + "\n".join(f"  {c}" for c in refused)
            + "\nStart a new run in another folder for them. Nothing was changed."
        )
    if changes and not _query("training_loop.reload_allow_changes", False):
        raise ConfigError(
            f"Reload of {save_dir} refused: the configuration differs from the saved run:\n"
            + "\n".join(f"  {c}" for c in changes)
            + "\nReload with the run's own configuration (bin/train.py SAVE_DIR -b training_loop.reload=True "
            "needs no config file), or add -b training_loop.reload_allow_changes=True to apply the changes from "
            "the reload's step on (they are recorded in meta.json)."
        )
    return changes


def _started_with(run: RunPaths) -> str:
    """The text of the config files and bindings a run was started with (configs/), in order."""
    return "\n".join(path.read_text() for path in run.config_files())


def _query(name: str, default):
    try:
        return gin.query_parameter(name)
    except ValueError:
        return default


def check_config(config_files, bindings) -> None:
    """Check config files and bindings as bin/train.py would before building anything (experiments' prepare).

    Raises:
        ConfigError: naming the bad binding, where it came from and the valid values.
    """
    import ginlab.training  # noqa: F401

    parse(config_files, split_bindings([bindings] if isinstance(bindings, str) else bindings))
