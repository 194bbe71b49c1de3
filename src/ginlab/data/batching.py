"""In-memory datasets batched by slicing index tensors, with an exactly resumable order.

A per-sample Dataset + collate costs more than the model step for small images; here a batch is one
`tensor[indices]`. Every random choice is a pure function of (seed, epoch, batch position):
- the order of epoch e is a permutation drawn from a generator seeded with (seed, e);
- the augmentation of batch b of epoch e uses a generator seeded with (seed, e, b), so it does not matter
  which worker process computes it, nor whether the run was stopped in between.
The loader is resumable in Lightning's sense (`state_dict` / `load_state_dict`): its state is the epoch and
the number of batches the training loop has consumed (set by the ginlab checkpoint callback, because
Lightning prefetches a batch ahead and the loader cannot know what was consumed).
"""

import math

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def _mix(*ints) -> int:
    """A well-spread 63-bit seed from a few integers (splitmix64 steps)."""
    x = 0x9E3779B97F4A7C15
    for i in ints:
        x = (x ^ (int(i) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return x >> 1


class TensorBatches(Dataset):
    """dataset[(epoch, batch_position, indices)] -> (x[indices], y[indices]), optionally augmented."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, augment=None, seed: int = 0):
        self.x, self.y, self.augment, self.seed = x, y, augment, seed

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):
        epoch, position, indices = key
        x, y = self.x[indices], self.y[indices]
        if self.augment is not None:
            generator = torch.Generator().manual_seed(_mix(self.seed, epoch, position))
            x = self.augment(x, generator)
        return x, y


class EpochBatchSampler(Sampler):
    """Yields (epoch, batch_position, index tensor) for one epoch per iter(); resumable mid-epoch."""

    """Args (besides the obvious): rank, world_size: the share of a DDP process (None: from
        torch.distributed).
    even_shards: every process gets the same number of batches, the last batches of the epoch being dropped
        (training: DDP processes must make the same number of steps, or they wait for each other forever);
        False: every batch is used exactly once, and the processes differ by one batch at most (evaluation,
        whose sums are added up across processes).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        even_shards: bool = True,
    ):
        self.size, self.batch_size, self.shuffle, self.seed, self.drop_last = (
            size,
            batch_size,
            shuffle,
            seed,
            drop_last,
        )
        self.even_shards = even_shards
        self.rank, self.world_size = rank, world_size  # None: from torch.distributed when it is initialized
        self.epoch = 0  # the epoch the next iter() produces
        self.start = 0  # batches of that epoch this process skips (already consumed before a restart)

    def _shard(self) -> tuple[int, int]:
        if self.world_size is not None:
            return self.rank or 0, self.world_size
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _num_batches(self) -> int:
        return self.size // self.batch_size if self.drop_last else math.ceil(self.size / self.batch_size)

    def __len__(self):
        # Under DDP every process takes every world_size-th batch of the same epoch order.
        rank, world = self._shard()
        batches = self._num_batches()
        if world == 1:
            return batches
        if self.even_shards:
            return batches // world
        if batches < world:
            # A process without a batch would skip evaluation and leave the others waiting for its sums.
            raise ValueError(
                f"The evaluation data has {self.size} examples, {batches} batch(es) of {self.batch_size}, "
                f"for {world} processes: each process needs at least one batch. Use a smaller batch size "
                f"or fewer devices."
            )
        return len(range(rank, batches, world))

    def __iter__(self):
        epoch, start = self.epoch, self.start
        self.epoch, self.start = epoch + 1, 0
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(_mix(self.seed, epoch)))
        else:
            order = torch.arange(self.size)
        rank, world = self._shard()
        for local in range(start, len(self)):
            position = local * world + rank
            yield epoch, position, order[position * self.batch_size : (position + 1) * self.batch_size]


class BatchLoader(DataLoader):
    """A DataLoader over whole batches (no per-sample collation) with a resumable position."""

    def __init__(
        self,
        dataset: TensorBatches,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
        even_shards: bool = True,
    ):
        self.batch_sampler_ = EpochBatchSampler(
            len(dataset), batch_size, shuffle, seed, drop_last, even_shards=even_shards
        )
        super().__init__(
            dataset,
            sampler=self.batch_sampler_,
            batch_size=None,  # the sampler yields whole batches
            num_workers=num_workers,
            persistent_workers=False,
            # A private generator: creating an iterator must not consume the global RNG, which the
            # model's dropout uses and which a resumed run restores.
            generator=torch.Generator().manual_seed(seed),
        )
        self.consumed = 0  # batches of the current epoch the training loop has finished (set by callback)
        self.current_epoch = 0
        self.seed = seed

    def __iter__(self):
        self.current_epoch = self.batch_sampler_.epoch
        self.consumed = self.batch_sampler_.start
        # Worker processes are seeded from this generator: seeded by (seed, epoch), a resumed run gives
        # the workers of an epoch the same seeds as the uninterrupted run did.
        self.generator.manual_seed(_mix(self.seed, self.current_epoch, 0x5EED))
        if self.num_workers == 0:
            # In this process a batch is collate_fn(dataset[key]), as DataLoader makes it (default_convert:
            # the (x, y) tuple becomes a list), without its fetcher and pinning checks: about 15 us a
            # batch less.
            return (self.collate_fn(self.dataset[key]) for key in self.sampler)
        return super().__iter__()

    def __len__(self):
        return len(self.batch_sampler_)

    def state_dict(self) -> dict:
        return {"epoch": self.current_epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if consumed >= len(self):
            epoch, consumed = epoch + 1, 0
        self.batch_sampler_.epoch, self.batch_sampler_.start = epoch, consumed


def random_shift(max_shift: int = 1):
    """Augmentation: translate each image by up to `max_shift` pixels, edge pixels repeated."""

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape  # (B, C, H, W)
        dy = torch.randint(-max_shift, max_shift + 1, (b, 1), generator=generator)
        dx = torch.randint(-max_shift, max_shift + 1, (b, 1), generator=generator)
        rows = (torch.arange(h).unsqueeze(0) + dy).clamp(0, h - 1)  # (B, H)
        cols = (torch.arange(w).unsqueeze(0) + dx).clamp(0, w - 1)  # (B, W)
        batch = torch.arange(b)[:, None, None]
        shifted = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return shifted.permute(0, 3, 1, 2).contiguous()

    return augment
