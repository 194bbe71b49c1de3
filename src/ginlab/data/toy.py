"""A generated toy problem for fast tests: Gaussian blobs drawn as tiny images, one blob centre per class."""

import torch

from ginlab.data.base import InMemoryDataModule
from ginlab.registry import register_datamodule


@register_datamodule("toy")
class Toy(InMemoryDataModule):
    """Args (besides InMemoryDataModule's): num_samples, image_size, num_classes, noise, data_seed."""

    def __init__(
        self,
        num_samples: int = 512,
        image_size: int = 8,
        num_classes: int = 4,
        noise: float = 0.5,
        data_seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_samples, self.image_size, self.num_classes = num_samples, image_size, num_classes
        self.noise, self.data_seed = noise, data_seed

    def load(self):
        g = torch.Generator().manual_seed(self.data_seed)
        centres = torch.rand(self.num_classes, 1, self.image_size, self.image_size, generator=g)
        y = torch.randint(0, self.num_classes, (self.num_samples,), generator=g)
        noise = self.noise * torch.randn(self.num_samples, 1, self.image_size, self.image_size, generator=g)
        return centres[y] + noise, y
