"""Registries: one decorator files a class by name and makes it gin-configurable;
every shipped config builds."""

from pathlib import Path

import gin
import pytest

import ginlab.training  # noqa: F401  (the shipped models, datasets and callbacks are registered first)
from ginlab.config import ConfigError, parse
from ginlab.registry import MODELS, Registry, UnknownNameError, register_model
from ginlab.training.configure import check_config as check_bindings

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.gin"))


def test_registering_makes_a_class_configurable_by_its_name():
    registry = Registry("widget")

    @registry.register("test_widget_a")
    class Widget:
        def __init__(self, size: int = 1):
            self.size = size

    gin.parse_config(["test_widget_a.size = 7"])
    try:
        assert registry["test_widget_a"]().size == 7
    finally:
        gin.clear_config()


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="'cnn' is registered twice"):

        @register_model("cnn")
        class Another:
            pass


def test_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(UnknownNameError) as error:
        MODELS["cnm"]
    assert "Did you mean 'cnn'" in str(error.value) and "cnn, mlp" in str(error.value)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_shipped_config_builds(config):
    assert config.read_text().startswith("#") and "bin/train.py" in config.read_text().split("\n\n")[0]
    from ginlab.training.loop import build_from_config

    parse([config], [])
    parts = build_from_config()
    dm, module = parts.datamodule, parts.module
    x, _ = dm.split("val")
    assert module(x[:4]).shape == (4, dm.num_classes)
    assert module.configure_optimizers()  # the optimizer (and schedule) were built from the config


def test_check_bindings_is_what_experiments_use():
    check_bindings([ROOT / "configs" / "toy.gin"], ["torch.optim.Adam.lr=0.1"])
    with pytest.raises(ConfigError, match="Did you mean: lr"):
        check_bindings([ROOT / "configs" / "toy.gin"], "torch.optim.Adam.lrr=0.1")


def test_the_model_and_data_packages_import_every_module_of_theirs():
    # Adding a model or a dataset is one file with one decorator: nothing to add to an __init__.
    import pkgutil
    import sys

    import ginlab.data
    import ginlab.models

    for package in (ginlab.models, ginlab.data):
        for module in pkgutil.iter_modules(package.__path__):
            assert f"{package.__name__}.{module.name}" in sys.modules
