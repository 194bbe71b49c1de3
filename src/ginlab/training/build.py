"""Build a run's parts from its configuration: the data first, then the model that fits it.

One function for everything that needs them: training_loop, and bin/evaluate.py (which rebuilds them from a
run folder's saved config). Errors in the configuration are ConfigErrors; an exception raised by a model's or
a datamodule's own code is left as it is, with its traceback (the training loop records it as a failed run).
"""

from __future__ import annotations

import dataclasses

import pytorch_lightning as pl

from ginlab.config import bad_value
from ginlab.data import InMemoryDataModule
from ginlab.errors import ConfigError
from ginlab.registry import DATAMODULES, MODELS
from ginlab.training.task import Classifier


@dataclasses.dataclass
class Parts:
    """What a run trains: its datamodule, the LightningModule, and the name of the model class it shows."""

    datamodule: pl.LightningDataModule
    module: pl.LightningModule
    model_class: str


def epoch_metrics(model: str) -> tuple[str, ...] | None:
    """The metrics a run of the registered `model` logs after every epoch: the Classifier's for an nn.Module,
    None for a LightningModule of its own (what it logs is known only once it ran). Used by a search's
    `prepare` to check its metric before anything trains."""
    cls = MODELS.get(model)
    if isinstance(cls, type) and issubclass(cls, pl.LightningModule):
        return None
    return Classifier.METRICS


def build(model: str, datamodule: str, optimizer, lr_scheduler, gradient_clip_val, seed: int) -> Parts:
    """The datamodule (its data checked, split and loaded), then the model for its input shape and classes.

    Raises:
        ConfigError: the data is missing, the model cannot take this data, an optimizer or schedule refuses
            its settings, or clipping is asked of a module that optimizes itself.
    """
    data = build_datamodule(datamodule, seed)
    cls = MODELS[model]
    if isinstance(cls, type) and issubclass(cls, pl.LightningModule):
        module = cls()  # a complete LightningModule: it brings its own steps and optimizers
        if gradient_clip_val is not None and not module.automatic_optimization:
            raise bad_value(
                "training_loop.gradient_clip_val", gradient_clip_val,
                f"None: {model!r} optimizes manually, so it must clip in its own training_step "
                "(self.clip_gradients); remove the binding",
            )  # fmt: skip
        return Parts(data, module, type(module).__name__)
    if not (hasattr(data, "input_shape") and hasattr(data, "num_classes")):
        raise ConfigError(
            f"Model {model!r} is an nn.Module, which ginlab trains as a classifier: the datamodule "
            f"{type(data).__name__} must provide input_shape and num_classes (InMemoryDataModule does), "
            f"or register a complete LightningModule as the model instead."
        )
    net = cls(input_shape=data.input_shape, num_classes=data.num_classes)
    opt = _construct("training_loop.optimizer", optimizer, net.parameters())
    scheduler = (
        _construct("training_loop.lr_scheduler", lr_scheduler, opt) if lr_scheduler is not None else None
    )
    return Parts(data, Classifier(net, opt, scheduler, gradient_clip_val), type(net).__name__)


def build_datamodule(name: str, seed: int) -> pl.LightningDataModule:
    datamodule = DATAMODULES[name]()
    if hasattr(datamodule, "check"):
        try:
            datamodule.check()  # missing data: a clear error before anything is written
        except FileNotFoundError as error:
            raise ConfigError(str(error)) from None
    datamodule.seed = seed  # the order and augmentation seed of ginlab's loaders
    if isinstance(datamodule, InMemoryDataModule):
        datamodule.setup()  # the model needs input_shape; Lightning calls setup itself for other modules
    return datamodule


def _construct(setting: str, factory, argument):
    """An optimizer or schedule from its gin-bound class (torch refusing a value is a configuration error)."""
    if not callable(factory):
        raise bad_value(setting, factory, "a reference to a torch class, e.g. @torch.optim.Adam")
    try:
        return factory(argument)
    except (TypeError, ValueError) as error:
        name = getattr(factory, "__name__", repr(factory))
        raise ConfigError(
            f"{setting} = @{name}: it refused its settings ({error}); check the {name}.* bindings."
        ) from None
