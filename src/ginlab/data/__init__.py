"""DataModules, one per file, registered by name with a decorator. Every module of this package is imported
here, so adding one is one file: nothing else to edit."""

import importlib
import pkgutil

from ginlab.data.base import InMemoryDataModule

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["InMemoryDataModule"]
