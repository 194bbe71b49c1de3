"""DataModules, one per file, registered by name: digits, mnist, toy, cifar10."""

from ginlab.data import cifar10, digits, mnist, toy  # noqa: F401  (importing registers them)
from ginlab.data.base import InMemoryDataModule  # noqa: F401
