"""A generated toy problem for fast tests: Gaussian blobs drawn as tiny images, one blob centre per class."""

import torch

from ginlab.config import check_int, check_number
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
        super().__init__(num_classes=num_classes, **kwargs)
        check_int("toy.num_samples", num_samples, minimum=8, example=512)
        check_int("toy.image_size", image_size, minimum=1, example=8)
        check_number("toy.noise", noise, 0, example=0.5)
        check_int("toy.data_seed", data_seed, minimum=0, example=0)
        self.num_samples, self.image_size = num_samples, image_size
        self.noise, self.data_seed = noise, data_seed

    def load(self):
        g = torch.Generator().manual_seed(self.data_seed)
        centres = torch.rand(self.num_classes, 1, self.image_size, self.image_size, generator=g)
        y = torch.randint(0, self.num_classes, (self.num_samples,), generator=g)
        noise = self.noise * torch.randn(self.num_samples, 1, self.image_size, self.image_size, generator=g)
        return centres[y] + noise, y
