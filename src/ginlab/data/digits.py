"""scikit-learn's digits: 1797 real 8x8 grey images of hand-written digits, shipped with the package."""

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ginlab.data.base import InMemoryDataModule
from ginlab.registry import register_datamodule


@register_datamodule("digits")
class Digits(InMemoryDataModule):
    def load(self):
        images, target = _digits()
        x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8), in [0, 1]
        return x, torch.tensor(target, dtype=torch.int64)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 8, 8), labels (N,)) as sklearn.datasets.load_digits() gives them, read from the file it reads.

    Importing scikit-learn takes longer than the rest of the run's start-up after Lightning (it brings pandas,
    pyarrow, joblib ...), and the data is one small CSV inside the package: found without importing it.
    A scikit-learn that stores it elsewhere is asked the usual way (tests/test_data.py checks both agree).
    """
    spec = importlib.util.find_spec("sklearn")  # for a top-level package this imports nothing
    folders = spec.submodule_search_locations if spec is not None else None
    csv = Path(folders[0], "datasets", "data", "digits.csv.gz") if folders else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    with gzip.open(csv, "rt") as f:
        data = np.loadtxt(f, delimiter=",")  # 64 pixel columns (0 .. 16), then the label
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
