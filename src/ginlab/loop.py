"""training_loop: the one shared, gin-configurable training loop (Lightning underneath).

build (data, model, optimizer: every configuration error surfaces here, before a file is written)
-> run folder (fresh, or reload from the newest valid checkpoint)
-> fit (train, validate each epoch) -> test on the best checkpoint -> summary.json.
"""

import logging
import signal
from pathlib import Path

import gin
import lightning_fabric  # noqa: F401
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.model_helpers import is_overridden

from ginlab import epoch_loop
from ginlab.callbacks import Checkpointer, Heartbeat, HistoryWriter, Interrupted, ProgressPrinter
from ginlab.callbacks.checkpointer import step_checkpoints
from ginlab.checkpoint_io import AtomicCheckpointIO, load_verified
from ginlab.config import ConfigError, flat_config
from ginlab.data import InMemoryDataModule
from ginlab.distributed import STRATEGIES, Workers, check_strategy, is_main_process
from ginlab.profiling import build_profiler
from ginlab.registry import CALLBACKS, DATAMODULES, MODELS
from ginlab.run_folder import RunFolder, RunFolderError, now
from ginlab.task import Classifier

log = logging.getLogger("ginlab.progress")


def build_datamodule(name: str, seed: int):
    datamodule = DATAMODULES[name]()
    if hasattr(datamodule, "check"):
        datamodule.check()  # missing data: a clear error before anything is written
    datamodule.seed = seed  # the order and augmentation seed of ginlab's loaders
    if isinstance(datamodule, InMemoryDataModule):
        datamodule.setup()  # the model needs input_shape; Lightning calls setup itself for other modules
    return datamodule


def build_model(name: str, datamodule, optimizer, lr_scheduler, gradient_clip_val=None):
    cls = MODELS[name]
    if isinstance(cls, type) and issubclass(cls, pl.LightningModule):
        return cls()  # a complete LightningModule: it brings its own steps and optimizers
    if not (hasattr(datamodule, "input_shape") and hasattr(datamodule, "num_classes")):
        raise ConfigError(
            f"Model {name!r} is an nn.Module, which ginlab trains as a classifier: the datamodule "
            f"{type(datamodule).__name__} must provide input_shape and num_classes "
            f"(InMemoryDataModule does), or register a complete LightningModule as the model instead."
        )
    net = cls(input_shape=datamodule.input_shape, num_classes=datamodule.num_classes)
    opt = optimizer(net.parameters())
    scheduler = lr_scheduler(opt) if lr_scheduler is not None else None
    return Classifier(net, opt, scheduler, gradient_clip_val)


def setting(name: str):
    """The value training_loop gets for `name` under the parsed gin config (its default when unbound)."""
    import inspect

    try:
        value = gin.query_parameter(f"training_loop.{name}")
    except ValueError:
        return inspect.signature(training_loop).parameters[name].default
    if isinstance(value, gin.config.ConfigurableReference):
        return value.scoped_configurable_fn() if value.evaluate else value.scoped_configurable_fn
    return value


def keep_torch_threads(threads: int | None) -> None:
    """Compute with the run's thread count: torch splits its CPU sums by thread, so a reload with another
    count (another --slots, another node, another OMP_NUM_THREADS) would continue a different run."""
    if threads and threads != torch.get_num_threads():
        log.info(
            "torch threads: %d, as when the run started (this process would use %d): "
            "the results depend on it",
            threads,
            torch.get_num_threads(),
        )
        torch.set_num_threads(threads)


def build_from_config():
    """(datamodule, module) exactly as training_loop builds them from the parsed gin config.

    Used by bin/evaluate.py, and by tests that check every shipped config builds.
    """
    seed = setting("seed")
    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = build_datamodule(setting("datamodule"), seed)
    module = build_model(
        setting("model"),
        datamodule,
        setting("optimizer"),
        setting("lr_scheduler"),
        setting("gradient_clip_val"),
    )
    return datamodule, module


def newest_valid_checkpoint(folder: Path) -> tuple[Path | None, dict]:
    """The newest checkpoint that is complete and loadable, and its content;
    broken ones are skipped loudly."""
    for path in step_checkpoints(folder):
        state, reason = load_verified(path)
        if state is not None:
            return path, state
        log.warning("WARNING: skipping broken checkpoint %s (%s); trying an older one", path, reason)
    return None, {}


@gin.configurable(
    denylist=["save_dir", "command", "config_files", "bindings", "accepted_changes", "on_folder_ready"]
)
def training_loop(
    save_dir,
    model: str = gin.REQUIRED,
    datamodule: str = gin.REQUIRED,
    optimizer=torch.optim.Adam,
    lr_scheduler=None,
    n_epochs: int = 10,
    seed: int = 0,
    gradient_clip_val: float | None = None,
    precision: str = "32-true",
    monitor: str = "val_acc",
    monitor_mode: str = "max",
    early_stopping_patience: int | None = None,
    callbacks=(),
    log_every_n_steps: int = 50,
    print_every_n_steps: int | None = None,
    checkpoint_every_n_steps: int | None = None,
    checkpoint_every_n_seconds: float | None = 300,
    keep_checkpoints: int = 2,
    heartbeat_seconds: float = 30,
    deterministic: bool = True,
    accelerator: str = "auto",
    devices="auto",
    strategy: str = "auto",
    mlflow_tracking_uri: str | None = None,
    mlflow_experiment: str = "ginlab",
    profiler: str | None = None,
    reload: bool = False,
    reload_allow_changes: bool = False,
    command=None,
    config_files=(),
    bindings=(),
    accepted_changes=(),
    on_folder_ready=None,
):
    """Train `model` on `datamodule` into the run folder `save_dir`; return the summary dict.

    Args (all settable from gin as training_loop.<name>):
        model, datamodule: registered names ("cnn", "digits" ...).
        optimizer, lr_scheduler: torch classes, e.g. @torch.optim.AdamW, @torch.optim.lr_scheduler.StepLR.
        n_epochs, seed, gradient_clip_val, precision ("32-true", "bf16-mixed" ...): as in Lightning.
        monitor, monitor_mode: the validation metric that picks best.ckpt and drives early stopping.
        early_stopping_patience: epochs without improvement before stopping (None: off).
        callbacks: names of registered extra callbacks.
        log_every_n_steps: steps.jsonl and TensorBoard step logging; print_every_n_steps: terminal lines
            (default: the same).
        checkpoint_every_n_steps / checkpoint_every_n_seconds: mid-epoch checkpoints (None: off).
        keep_checkpoints: rolling checkpoints kept (at least 2). heartbeat_seconds: meta.json heartbeat.
        deterministic: torch deterministic algorithms (bitwise-reproducible on CPU).
        accelerator, devices: as in Lightning; devices > 1 trains with DDP, one process per device.
        strategy: "auto" (DDP when devices > 1), "ddp" or "ddp_find_unused_parameters_true"; see
            docs/resume.md.
        mlflow_tracking_uri: also log to this MLflow server (TensorBoard is always on).
        profiler: None (off), or "simple" / "advanced" / "pytorch": Lightning's profiler, report in profile/.
        reload: continue the run in save_dir from its newest valid checkpoint.
        reload_allow_changes: reload even though the configuration differs (recorded in meta.json).
    Raises:
        ConfigError: bad configuration or missing data (nothing written). RunFolderError: folder unusable.
        Interrupted: stopped by a signal after writing a checkpoint. Other exceptions: training failed.
    """
    # Under DDP only the process the user started owns the folder; the others train with a read-only view.
    run = RunFolder(save_dir, writer=is_main_process())
    if reload and not run.meta.exists():
        raise RunFolderError(
            f"Cannot reload {save_dir}: it holds no run (no meta.json). "
            f"Start a fresh run by leaving out training_loop.reload=True."
        )
    if not reload and run.writer and run.holds_run():
        raise RunFolderError(
            f"{save_dir} already holds a run. To continue it, add -b training_loop.reload=True; "
            f"to start a new run, choose another folder. Nothing was changed."
        )

    # -- build: every configuration error surfaces here, before the run folder is touched --------------------
    pl.seed_everything(seed, workers=True, verbose=False)
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"training_loop.strategy={strategy!r} is not supported: expected one of "
            f"{', '.join(map(repr, STRATEGIES))}. ginlab trains in one process or with DDP."
        )
    try:
        dm = build_datamodule(datamodule, seed)
        module = build_model(model, dm, optimizer, lr_scheduler, gradient_clip_val)
        if (
            gradient_clip_val is not None
            and not isinstance(module, Classifier)
            and not module.automatic_optimization
        ):
            raise ConfigError(
                f"training_loop.gradient_clip_val={gradient_clip_val} cannot apply to {model!r}: it "
                f"optimizes manually, so it must clip in its own training_step (self.clip_gradients); "
                f"remove the binding."
            )
        extra = [CALLBACKS[name]() for name in callbacks]
        profiler = build_profiler(profiler, run.path)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"Could not build the run from its configuration: {e}") from e
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from e

    # -- the run folder: one writer; fresh, or cut back to the checkpoint it resumes ------------------------
    run.acquire()
    workers = Workers()
    try:
        # another process started a run here since the check above
        if not reload and run.writer and run.holds_run():
            raise RunFolderError(f"{save_dir} already holds a run (started by another process just now).")
        checkpoint, resumed = None, {}  # resumed: ginlab's part of the checkpoint (none: start from step 0)
        if reload:
            for tmp in run.checkpoints.glob(".*.tmp") if run.writer else ():
                tmp.unlink()  # a write that a kill interrupted
            checkpoint, saved_state = newest_valid_checkpoint(run.checkpoints)
            resumed = saved_state.get("ginlab", {})
            if checkpoint is not None:
                epoch = saved_state["epoch"]
                if epoch > n_epochs:
                    raise ConfigError(
                        f"{save_dir} is already at epoch {epoch}: training_loop.n_epochs={n_epochs} "
                        f"cannot be reached again. Use n_epochs >= {epoch}. Nothing was changed."
                    )
            run.record_reload(
                command or [],
                checkpoint,
                accepted_changes=list(accepted_changes),
                history_rows=resumed.get("history_rows", 0),
                step_rows=resumed.get("step_rows", 0),
            )
            keep_torch_threads(run.read_meta().get("torch_threads"))
            log.info(
                "==== reload %s from %s", now(), checkpoint or "the start (no checkpoint was written yet)"
            )
        else:
            run.create(command or [], config_files, list(bindings))
        if on_folder_ready is not None and run.writer:
            on_folder_ready(run)
        checkpointer = None
        try:
            run.write_config(gin.operative_config_str(), flat_config())

            history = HistoryWriter(run, log_every_n_steps)
            run.cut_history(resumed.get("history_rows", 0), resumed.get("step_rows", 0))
            checkpointer = Checkpointer(
                run.checkpoints,
                history,
                monitor,
                monitor_mode,
                checkpoint_every_n_steps,
                checkpoint_every_n_seconds,
                keep_checkpoints,
            )
            all_callbacks = [
                history,
                ProgressPrinter(run.path, print_every_n_steps or log_every_n_steps),
                Heartbeat(run, heartbeat_seconds),
                *extra,
            ]
            if early_stopping_patience is not None:
                all_callbacks.append(
                    EarlyStopping(monitor=monitor, mode=monitor_mode, patience=early_stopping_patience)
                )
            all_callbacks.append(checkpointer)
            loggers = [
                TensorBoardLogger(
                    save_dir=str(run.path), name="tensorboard", version="", default_hp_metric=False
                )
            ]
            if not run.writer:
                loggers = []  # TensorBoard and MLflow are the run folder's: written by its owner only
            elif mlflow_tracking_uri:
                loggers.append(_mlflow_logger(run, mlflow_tracking_uri, mlflow_experiment))
            for logger in loggers:  # the configuration beside the curves (TensorBoard hparams, MLflow params)
                logger.log_hyperparams(flat_config())

            trainer = pl.Trainer(
                max_epochs=n_epochs,
                accelerator=accelerator,
                devices=devices,
                strategy=strategy,
                precision=precision,
                # Classifier clips in its own step; Lightning's option is for automatic optimization only.
                gradient_clip_val=gradient_clip_val if module.automatic_optimization else None,
                deterministic=deterministic,
                callbacks=all_callbacks,
                logger=loggers,
                log_every_n_steps=log_every_n_steps,
                enable_progress_bar=False,
                enable_model_summary=False,
                use_distributed_sampler=False,  # the batch sampler decides the order; see data/batching.py
                plugins=[AtomicCheckpointIO(), *_cluster_plugins()],
                default_root_dir=str(run.path),
                profiler=profiler,
            )
            # Lightning's loop, with a shorter path through each batch where it can
            epoch_loop.install(trainer)
            if deterministic:
                # Deterministic mode also fills the memory of every new tensor with NaN, which only shows up
                # an op that reads memory it never wrote; torch documents turning it off as keeping results
                # deterministic. It costs 3 % of the digits CNN's step (benchmarks/train_overhead.py).
                torch.utils.deterministic.fill_uninitialized_memory = False
            check_strategy(trainer)
            # before the other processes start: a signal is then a flag
            checkpointer.install_signal_handlers()
            workers.start(trainer, run, lambda: checkpointer.stop_signal)
            trainer.fit(
                module, datamodule=dm, ckpt_path=str(checkpoint) if checkpoint else None, weights_only=True
            )
            if checkpointer.stop_requested():
                raise Interrupted(checkpointer.stop_signal)

            best = run.checkpoints / "best.ckpt"
            tested = best if best.exists() else run.checkpoints / "last.ckpt"
            test_metrics = {}
            if is_overridden("test_step", module) and tested.exists():
                results = trainer.test(
                    module, datamodule=dm, ckpt_path=str(tested), verbose=False, weights_only=True
                )
                test_metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
                log.info(
                    "test (%s): %s", tested.name, "  ".join(f"{k} {v:.4f}" for k, v in test_metrics.items())
                )
            rows = run.history_rows()
            summary = {
                "status": "finished",
                "epochs": len(rows),
                "steps": trainer.global_step,
                "time": round(history.elapsed(), 3),
                "monitor": {"metric": monitor, "mode": monitor_mode},
                "final": rows[-1] if rows else {},
                "best": {
                    **(
                        {
                            "epoch": checkpointer.best["epoch"],
                            "step": checkpointer.best["step"],
                            monitor: checkpointer.best["value"],
                        }
                        if checkpointer.best
                        else {}
                    ),
                    "checkpoint": str(tested.relative_to(run.path)),
                },
                "test": {**test_metrics, "checkpoint": str(tested.relative_to(run.path))},
            }
            run.write_summary(summary)
            run.write_config(gin.operative_config_str(), flat_config())
            run.update_meta(status="finished", ended=now(), heartbeat=now(), exit_code=0)
        except SIGTERMException:
            # Lightning's own SIGTERM path (should not happen: ours replaces it); still an interruption.
            run.update_meta(status="interrupted", ended=now(), heartbeat=now(), exit_code=3)
            raise Interrupted(signal.SIGTERM) from None
        except Interrupted as e:
            log.info("interrupted (%s); continue with -b training_loop.reload=True", e)
            run.update_meta(status="interrupted", ended=now(), heartbeat=now(), exit_code=3)
            raise
        except BaseException as e:
            import traceback

            failed_others = workers.finish(failed=True)
            if (
                isinstance(e, (KeyboardInterrupt, SystemExit))
                and checkpointer is not None
                and checkpointer.hard_stop
            ):
                # Lightning turns the second Ctrl-C's KeyboardInterrupt into SystemExit(1).
                log.info(
                    "stopped by a second Ctrl-C: continue from the newest checkpoint with "
                    "-b training_loop.reload=True"
                )
                run.update_meta(status="interrupted", ended=now(), heartbeat=now(), exit_code=3)
                raise Interrupted(signal.SIGINT) from None

            message = str(e) + "".join(f"\n{p}" for p in failed_others)
            if failed_others:
                log.info("other processes of this run: %s", "; ".join(failed_others))
            run.update_meta(
                status="failed",
                ended=now(),
                heartbeat=now(),
                exit_code=1,
                error={"type": type(e).__name__, "message": message, "traceback": traceback.format_exc()},
            )
            raise
        return summary
    finally:
        for problem in workers.finish(failed=False):
            log.warning("WARNING: %s", problem)
        run.release()


def _cluster_plugins() -> list:
    """Under SLURM, Lightning would requeue the job itself on SIGUSR1; ginlab's checkpointer handles the
    signal and the job script requeues (see docs/experiments.md)."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def _mlflow_logger(run: RunFolder, uri: str, experiment: str):
    """MLflow mirrors the run (self-hosted server); a reload continues the same MLflow run."""
    from pytorch_lightning.loggers import MLFlowLogger

    meta = run.read_meta()
    logger = MLFlowLogger(
        experiment_name=experiment,
        tracking_uri=uri,
        run_name=run.path.name,
        run_id=meta.get("mlflow_run_id"),
        tags={"run_folder": str(run.path.resolve())},
        synchronous=False,  # metrics are sent in the background: no HTTP wait in the loop
    )
    run.update_meta(mlflow_run_id=logger.run_id, mlflow_tracking_uri=uri)
    return logger
