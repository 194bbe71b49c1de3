"""InMemoryDataModule: the shared base of datasets that fit in memory (digits, MNIST, toy, CIFAR-10).

A subclass only implements `load()` -> (x, y) tensors (x float (N, C, H, W), y int64 (N,)) and, when the
data has an official test split, `load_test()`. The base makes a fixed, seeded train/val/test split and
serves batches with `BatchLoader` (index slicing, exactly resumable order).
"""

import lightning_fabric  # noqa: F401  (imported before pytorch_lightning to keep its warnings quiet)
import pytorch_lightning as pl
import torch

from ginlab.config import bad_value, check_choice, check_int, check_number
from ginlab.data.batching import BatchLoader, TensorBatches, random_shift
from ginlab.errors import ConfigError
from ginlab.registry import name_of


class InMemoryDataModule(pl.LightningDataModule):
    """Args:
    batch_size: training batch size (evaluation uses the same).
    val_fraction, test_fraction: shares of the data held out when the data has no official split.
    split_seed: seed of the fixed split (kept apart from the training seed so runs compare on equal data).
    num_workers: worker processes for batch preparation (0: in the main process).
    augment: None or "shift" (random translation by one pixel).
    num_classes: the number of classes; None infers it from the labels (the largest label + 1).
    """

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        num_workers: int = 0,
        augment: str | None = None,
        num_classes: int | None = None,
    ):
        super().__init__()
        name = name_of(type(self), type(self).__name__)
        check_int(f"{name}.batch_size", batch_size, minimum=1, example=64)
        check_number(f"{name}.val_fraction", val_fraction, 0, 1, example=0.15)
        check_number(f"{name}.test_fraction", test_fraction, 0, 1, example=0.15)
        if val_fraction + test_fraction >= 1:
            raise bad_value(
                f"{name}.val_fraction", val_fraction,
                f"val_fraction + test_fraction < 1 (test_fraction is {test_fraction}): something must be left to "
                "train on",
            )  # fmt: skip
        check_int(f"{name}.split_seed", split_seed, minimum=0, example=0)
        check_int(f"{name}.num_workers", num_workers, minimum=0, example=2)
        check_choice(f"{name}.augment", augment, ["shift"], optional=True)
        check_int(f"{name}.num_classes", num_classes, minimum=2, optional=True, example=10)
        self.num_classes = num_classes  # None: the number of distinct labels, known once the data is loaded
        self.batch_size, self.num_workers, self.augment = batch_size, num_workers, augment
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.seed = 0  # the order and augmentation seed: training_loop sets it to the run's seed
        self.splits = None
        self.train_loader = None
        self.resume_state = None  # set by the checkpoint callback on reload, applied to the next train loader

    # -- to implement --------------------------------------------------------------------------------------
    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def load_test(self):
        """(x, y) of an official test split, or None to hold out `test_fraction` of `load()`."""
        return

    def check(self) -> None:
        """Raise a clear error when the data is missing (called before a run folder is created)."""

    # -- shared --------------------------------------------------------------------------------------------
    def setup(self, stage=None):
        if self.splits is not None:
            return
        x, y = self.load()
        test = self.load_test()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))
        n_val = round(self.val_fraction * len(x))
        n_test = 0 if test is not None else round(self.test_fraction * len(x))
        val_idx, test_idx, train_idx = order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]
        self.splits = {
            "train": (x[train_idx], y[train_idx]),
            "val": (x[val_idx], y[val_idx]),
            "test": test if test is not None else (x[test_idx], y[test_idx]),
        }
        self.num_classes = self._check_labels(y if test is None else torch.cat([y, test[1]]))

    def _check_labels(self, y: torch.Tensor) -> int:
        """The number of classes: as given, or inferred from the labels (0 .. K-1); labels outside refused."""
        name = name_of(type(self), type(self).__name__)
        if y.dtype != torch.int64 or y.ndim != 1:
            raise TypeError(
                f"{type(self).__name__}.load() must return labels as an int64 tensor of shape (N,), not "
                f"{y.dtype} of shape {tuple(y.shape)}."
            )
        low, high = int(y.min()), int(y.max())
        if low < 0 or (self.num_classes is not None and high >= self.num_classes):
            raise ConfigError(f"{name}: labels run from {low} to {high}, outside 0 .. num_classes - 1 "
                              f"({name}.num_classes = {self.num_classes}).")  # fmt: skip
        return self.num_classes if self.num_classes is not None else max(high + 1, 2)

    @property
    def input_shape(self) -> tuple[int, ...]:
        self.setup()
        return tuple(self.splits["train"][0].shape[1:])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        self.setup()
        return self.splits[name]

    def train_dataloader(self):
        x, y = self.split("train")
        augment = random_shift(1) if self.augment == "shift" else None
        self.train_loader = BatchLoader(
            TensorBatches(x, y, augment, self.seed),
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            num_workers=self.num_workers,
        )
        if self.resume_state is not None:
            self.train_loader.load_state_dict(self.resume_state)
            self.resume_state = None
        return self.train_loader

    def _eval_loader(self, name: str):
        x, y = self.split(name)
        # Under DDP each process evaluates its share of the batches, all of them used once (not evened out).
        return BatchLoader(
            TensorBatches(x, y), self.batch_size, shuffle=False, num_workers=0, even_shards=False
        )

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader("test")

    def predict_dataloader(self):
        return self._eval_loader("test")
