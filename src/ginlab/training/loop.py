"""training_loop: the one shared, gin-configurable training loop (Lightning underneath).

check the settings -> build data, model, callbacks and Trainer (every configuration error surfaces here,
before a file is written) -> open the run folder (fresh, or cut back to the checkpoint it resumes) -> fit ->
test the best checkpoint -> summary.json. How the run ends is recorded in meta.json (ginlab.training.outcome)
and, when notify.* says so, sent to a person (ginlab.health).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable

import gin
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping

from ginlab.config import bad_value, check_bool, check_choice, check_int, check_number, flat_config
from ginlab.errors import ConfigError
from ginlab.health.notifier import Notifier
from ginlab.health.settings import notify_settings
from ginlab.health.watchdog import start_watchdog, stop_watchdog
from ginlab.registry import CALLBACKS
from ginlab.runfolder import RunFolder, Start, nothing_to_do, plan_start, read_summary
from ginlab.training import callbacks as cb
from ginlab.training.build import Parts, build
from ginlab.training.callbacks.mlflow import log_config, record_run_id
from ginlab.training.distributed import Workers, is_main_process
from ginlab.training.finish import summarize
from ginlab.training.outcome import Interrupted, recording, signal_handlers_kept
from ginlab.training.resume import open_run
from ginlab.training.task import Classifier
from ginlab.training.trainer import build_trainer

log = logging.getLogger("ginlab.progress")


@dataclasses.dataclass
class Launch:
    """How the run was asked for (bin/train.py fills it; a call from Python may leave it empty).

    command: the command line (meta.json); config_files, bindings: what configs/ keeps; start: the decision
    made before parsing was finished (None: decided here); changes: the reload's accepted config changes
    (ginlab.config.Change); on_folder_ready: called with the RunFolder once it may be written (log capture).
    """

    command: list[str] = dataclasses.field(default_factory=list)
    config_files: list[str] = dataclasses.field(default_factory=list)
    bindings: list[str] = dataclasses.field(default_factory=list)
    start: Start | None = None
    changes: list = dataclasses.field(default_factory=list)
    on_folder_ready: Callable | None = None
    run: RunFolder | None = None  # set by training_loop: the folder it opened (its recorded exit code)


@gin.configurable("training_loop", denylist=["save_dir", "launch"])
def training_loop(
    save_dir,
    model: str = gin.REQUIRED,
    datamodule: str = gin.REQUIRED,
    optimizer=torch.optim.Adam,
    lr_scheduler=None,
    n_epochs: int = 10,
    seed: int = 0,
    gradient_clip_val: float | None = None,
    monitor: str = "val_acc",
    monitor_mode: str = "max",
    early_stopping_patience: int | None = None,
    callbacks=(),
    reload: bool | str = False,
    reload_allow_changes: bool = False,
    launch: Launch | None = None,
) -> dict:
    """Train `model` on `datamodule` into the run folder `save_dir`; return the summary dict.

    Args (all settable from gin as training_loop.<name>):
        model, datamodule: registered names ("cnn", "digits" ...).
        optimizer, lr_scheduler: torch classes, e.g. @torch.optim.AdamW, @torch.optim.lr_scheduler.StepLR.
        n_epochs, seed: how long, and the seed of everything random.
        gradient_clip_val: clip the gradients' norm to this (None: off).
        monitor, monitor_mode: the validation metric that picks best.ckpt and drives early stopping.
        early_stopping_patience: epochs without improvement before stopping (None: off).
        callbacks: names of registered extra callbacks.
        reload: True continues the run in save_dir from its newest valid checkpoint; "auto" starts it when the
            folder is empty, continues it when it is not finished, and does nothing when it is.
        reload_allow_changes: accept configuration changes a reload can apply (ginlab.config.reload).
    Cadences and the Trainer are configured where they live: checkpointer.*, history.*, progress.*,
    heartbeat.*, mlflow.*, divergence.*, telemetry.*, notify.*, trainer.* (README, "What training_loop
    offers").

    Raises:
        ConfigError: bad configuration or missing data (nothing written). RunFolderError: folder unusable.
        Interrupted: stopped by a signal after writing a checkpoint.
        Diverged: the loss became NaN or infinite.
        Other exceptions: training failed (recorded in meta.json).
    """
    launch = launch or Launch()
    _check_settings(n_epochs, seed, gradient_clip_val, monitor, monitor_mode, early_stopping_patience, reload,
                    reload_allow_changes, callbacks)  # fmt: skip
    run = launch.run = RunFolder(save_dir, writer=is_main_process())  # under DDP only rank 0 writes
    start = launch.start or plan_start(save_dir, reload)
    if start.action == "done" or reload == "auto" and nothing_to_do(save_dir, start.meta, n_epochs):
        return read_summary(save_dir) or {}  # reload="auto" on a run that finished what was asked
    pl.seed_everything(seed, workers=True, verbose=False)

    # -- build: configuration errors surface here, before the run folder is touched ------------------------
    try:
        parts, broken = build(model, datamodule, optimizer, lr_scheduler, gradient_clip_val, seed), None
    except ConfigError:
        raise
    except (
        Exception
    ) as error:  # a bug in the model's or the data's own code: a failed run, with its traceback
        parts, broken = None, error
    if parts is not None and isinstance(parts.module, Classifier) and monitor not in Classifier.METRICS:
        raise bad_value(
            "training_loop.monitor", monitor, f"one of the metrics the classifier logs: {Classifier.METRICS}"
        )
    history = cb.HistoryWriter(run)
    divergence = cb.DivergenceCheck()
    checkpointer = cb.Checkpointer(run, history, monitor, monitor_mode, check_finite=divergence.stop)
    model_class = parts.model_class if parts else model
    progress = cb.ProgressPrinter(run.path, model_class, default_every=history.every_n_steps)
    telemetry = cb.Telemetry(progress, checkpointer)
    history.column_sources.append(telemetry.columns)
    all_callbacks = [history, progress, telemetry, cb.Heartbeat(run), divergence,
                     *[CALLBACKS[name]() for name in callbacks]]  # fmt: skip
    if early_stopping_patience is not None:
        all_callbacks.append(
            EarlyStopping(monitor=monitor, mode=monitor_mode, patience=early_stopping_patience)
        )
    all_callbacks += [*_reload_changes(launch.changes), checkpointer]
    mlflow = cb.mlflow_logger(run)
    notifier = Notifier(notify_settings())  # a URL Apprise cannot use is a configuration error here
    automatic = parts is not None and parts.module.automatic_optimization  # the Classifier clips itself
    trainer = build_trainer(run.path, n_epochs, all_callbacks, gradient_clip_val if automatic else None,
                            history.every_n_steps)  # fmt: skip

    # -- the run folder: one writer; fresh, or cut back to the checkpoint it resumes -----------------------
    run.acquire()
    workers, watchdog = Workers(), None
    try:
        checkpoint = open_run(run, start, launch, n_epochs)
        if run.writer:  # reports the run stale if it hangs, freezes or dies without a word
            watchdog = start_watchdog(run.path, notifier.settings)
        with signal_handlers_kept(), recording(run, workers, checkpointer, fresh=start.action == "fresh"):
            if broken is not None:
                raise broken
            config = flat_config()
            run.write_config(gin.operative_config_str(), config)
            trainer.loggers = _loggers(run, mlflow, config)
            # Before the other processes start: a signal is then a flag.
            checkpointer.install_signal_handlers()
            workers.start(trainer, run, lambda: checkpointer.stop_signal)
            trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=checkpoint, weights_only=True)
            if checkpointer.stop_requested():
                raise Interrupted(checkpointer.stop_signal)
            return summarize(run, trainer, parts, checkpointer, history, monitor, monitor_mode)
    finally:
        stop_watchdog(watchdog)
        for problem in workers.finish(failed=False):
            log.warning("WARNING: %s", problem)
        run.release()
        if run.writer and run.recorded_exit_code is not None:  # this session recorded how the run ended
            notifier.run_ended(run.path)


def _check_settings(n_epochs, seed, clip, monitor, mode, patience, reload, allow_changes, callbacks) -> None:
    check_int("training_loop.n_epochs", n_epochs, minimum=1, example=10)
    check_int("training_loop.seed", seed, minimum=0, example=0)
    check_number("training_loop.gradient_clip_val", clip, 0, exclusive=True, optional=True, example=1.0)
    if not isinstance(monitor, str) or not monitor:
        raise bad_value("training_loop.monitor", monitor, 'a metric name in quotes, e.g. "val_acc"')
    check_choice("training_loop.monitor_mode", mode, ["min", "max"])
    check_int("training_loop.early_stopping_patience", patience, minimum=1, optional=True, example=5)
    check_choice("training_loop.reload", reload, [False, True, "auto"])
    check_bool("training_loop.reload_allow_changes", allow_changes)
    if not isinstance(callbacks, (list, tuple)):
        raise bad_value(
            "training_loop.callbacks", callbacks, 'a list of registered callback names, e.g. ["swa"]'
        )


def _reload_changes(changes) -> list:
    """The callback that applies a reload's accepted hyperparameter changes after the restore (or none)."""
    optimizer = {c.key.rsplit(".", 1)[1]: c.new for c in changes if c.target == "optimizer"}
    scheduler = {c.key.rsplit(".", 1)[1]: c.new for c in changes if c.target == "scheduler"}
    patience = next((c.new for c in changes if c.key == "training_loop.early_stopping_patience"), None)
    return [cb.ReloadChanges(optimizer, scheduler, patience)] if optimizer or scheduler or patience else []


def _loggers(run: RunFolder, mlflow, config: dict) -> list:
    """TensorBoard always, MLflow with a tracking URI; written by the folder's owner only. `config`: the flat
    config just written to config.json (its hyperparameters)."""
    if not run.writer:
        return []
    from pytorch_lightning.loggers import TensorBoardLogger

    loggers = [
        TensorBoardLogger(save_dir=str(run.path), name="tensorboard", version="", default_hp_metric=False)
    ]
    loggers[0].log_hyperparams(config)
    if mlflow is not None:
        record_run_id(run, mlflow)
        log_config(mlflow, config)
        loggers.append(mlflow)
    return loggers


def setting(name: str):
    """The value training_loop gets for `name` under the parsed gin config (its default when unbound)."""
    try:
        value = gin.query_parameter(f"training_loop.{name}")
    except ValueError:
        return inspect.signature(training_loop).parameters[name].default
    if isinstance(value, gin.config.ConfigurableReference):
        return value.scoped_configurable_fn() if value.evaluate else value.scoped_configurable_fn
    return value


def build_from_config() -> Parts:
    """The parts exactly as training_loop builds them from the parsed gin config (bin/evaluate.py, tests)."""
    seed = setting("seed")
    pl.seed_everything(seed, workers=True, verbose=False)
    return build(
        setting("model"), setting("datamodule"), setting("optimizer"), setting("lr_scheduler"),
        setting("gradient_clip_val"), seed,
    )  # fmt: skip
