"""The Lightning Trainer of a run, built from the `trainer.*` settings, before anything is written.

    -b 'trainer.precision="bf16-mixed"'
    -b 'trainer.accelerator="cpu"#trainer.devices=2'          # DDP, one process per device

Building it checks every Trainer setting (Lightning's own checks included) while a mistake can still exit
with code 2 and leave no trace.
"""

from __future__ import annotations

import gin
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException

from ginlab.config import bad_value, check_bool, check_choice
from ginlab.data import InMemoryDataModule
from ginlab.errors import ConfigError
from ginlab.training import lightning_internals
from ginlab.training.checkpoints import AtomicCheckpointIO
from ginlab.training.distributed import STRATEGIES, check_strategy
from ginlab.training.profiling import PROFILERS, NoProfiler, build_profiler
from ginlab.training.task import Classifier

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


@gin.configurable(
    "trainer", allowlist=["accelerator", "devices", "strategy", "precision", "deterministic", "profiler"]
)
def build_trainer(
    run_path,
    n_epochs: int,
    callbacks: list,
    gradient_clip_val: float | None = None,
    log_every_n_steps: int = 50,
    accelerator: str = "auto",
    devices="auto",
    strategy: str = "auto",
    precision: str = "32-true",
    deterministic: bool = True,
    profiler: str | None = None,
) -> pl.Trainer:
    """The Trainer for a run (loggers are added once the run folder is open).

    Args (from gin: trainer.<name>):
        accelerator, devices: as in Lightning; devices > 1 trains with DDP, one process per device.
        strategy: "auto" (DDP when devices > 1), "ddp" or "ddp_find_unused_parameters_true"; docs/resume.md.
        precision: "32-true", "bf16-mixed" ... (Lightning's values).
        deterministic: torch's deterministic algorithms (bitwise-reproducible runs on CPU; exact resume).
        profiler: None (off), or "simple" / "advanced" / "pytorch": Lightning's profiler, report in profile/.

    Raises:
        ConfigError: a setting Lightning or ginlab cannot run, naming it and the valid values.
    """
    check_choice("trainer.accelerator", accelerator, ACCELERATORS)
    _check_devices(devices)
    check_choice("trainer.strategy", strategy, STRATEGIES)
    check_choice("trainer.precision", precision, lightning_internals.precision_values())
    check_bool("trainer.deterministic", deterministic)
    check_choice("trainer.profiler", profiler, sorted(PROFILERS), optional=True)
    try:
        trainer = pl.Trainer(
            max_epochs=n_epochs,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            precision=precision,
            gradient_clip_val=gradient_clip_val,
            deterministic=deterministic,
            callbacks=callbacks,
            logger=False,  # the run folder's loggers are added when it is open (training_loop)
            log_every_n_steps=log_every_n_steps,
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=False,  # the batch sampler decides the order; see data/batching.py
            plugins=[AtomicCheckpointIO(), *_cluster_plugins()],
            default_root_dir=str(run_path),
            profiler=build_profiler(profiler, run_path),
        )
    except (MisconfigurationException, ValueError, RuntimeError) as error:
        raise ConfigError(f"The trainer.* settings cannot run here: {error}") from None
    check_strategy(trainer)
    lightning_internals.keep_signal_handlers(trainer)
    lightning_internals.install_epoch_loop(trainer, lean_obstacles)
    if deterministic:
        # Deterministic mode also fills the memory of every new tensor with NaN, which only shows up an op
        # that reads memory it never wrote; torch documents turning it off as keeping results deterministic.
        # It costs 3 % of the digits CNN's step (benchmarks/train_overhead.py).
        torch.utils.deterministic.fill_uninitialized_memory = False
    return trainer


def lean_obstacles(trainer: pl.Trainer) -> list[str]:
    """What, on ginlab's side, rules the shorter per-batch path out (lightning_internals adds Lightning's)."""
    obstacles = []
    # Exactly the Classifier: a subclass may step, take its arguments or run backward its own way.
    if type(trainer.lightning_module) is not Classifier:
        obstacles.append(f"the model {type(trainer.lightning_module).__name__} is not ginlab's Classifier")
    # ginlab's in-memory batches: (x, y) tensors on the CPU, never None.
    if not isinstance(trainer.datamodule, InMemoryDataModule):
        obstacles.append(f"the datamodule {type(trainer.datamodule).__name__} is not an InMemoryDataModule")
    if type(trainer.profiler) is not NoProfiler:
        obstacles.append(f"profiler {type(trainer.profiler).__name__}")
    return obstacles


def _check_devices(devices) -> None:
    if devices == "auto" or devices == -1 and not isinstance(devices, bool):
        return
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return
    if isinstance(devices, (list, tuple)) and devices and all(isinstance(d, int) and d >= 0 for d in devices):
        return
    raise bad_value(
        "trainer.devices", devices, '"auto", a number of devices >= 1, -1 (all) or a list of indices'
    )


def _cluster_plugins() -> list:
    """Under SLURM, Lightning would requeue the job itself on SIGUSR1; ginlab's checkpointer handles the signal
    and the job script requeues (see docs/experiments.md)."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
