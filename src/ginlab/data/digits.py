"""scikit-learn's digits: 1797 real 8x8 grey images of hand-written digits, shipped with the package."""

import torch

from ginlab.data.base import InMemoryDataModule
from ginlab.registry import register_datamodule


@register_datamodule("digits")
class Digits(InMemoryDataModule):
    def load(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8), in [0, 1]
        return x, torch.tensor(digits.target, dtype=torch.int64)
