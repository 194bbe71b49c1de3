"""InMemoryDataModule: the shared base of datasets that fit in memory (digits, MNIST, toy, CIFAR-10).

A subclass only implements `load()` -> (x, y) tensors (x float (N, C, H, W), y int64 (N,)) and, when the
data has an official test split, `load_test()`. The base makes a fixed, seeded train/val/test split and
serves batches with `BatchLoader` (index slicing, exactly resumable order).
"""

import lightning_fabric  # noqa: F401  (imported before pytorch_lightning to keep its warnings quiet)
import pytorch_lightning as pl
import torch

from ginlab.data.batching import BatchLoader, TensorBatches, random_shift


class InMemoryDataModule(pl.LightningDataModule):
    """Args:
    batch_size: training batch size (evaluation uses the same).
    val_fraction, test_fraction: shares of the data held out when the data has no official split.
    split_seed: seed of the fixed split (kept apart from the training seed so runs compare on equal data).
    num_workers: worker processes for batch preparation (0: in the main process).
    augment: None or "shift" (random translation by one pixel).
    """

    num_classes: int = 10
    name = "in-memory"

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        num_workers: int = 0,
        augment: str | None = None,
    ):
        super().__init__()
        if augment not in (None, "shift"):
            raise ValueError(f"augment={augment!r} is not known; expected None or 'shift'.")
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
