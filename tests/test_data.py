"""Data: real shipped datasets, the CIFAR-10 binary reader, and the resumable in-memory batching."""

import numpy as np
import pytest
import torch

from ginlab.data.batching import BatchLoader, TensorBatches, random_shift
from ginlab.data.cifar10 import CIFAR10, MissingDataError
from ginlab.data.digits import Digits
from ginlab.data.mnist import MNIST


def epoch_batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def make_loader(num_workers=0, augment=None, size=50, batch_size=8, seed=3):
    x = torch.arange(size, dtype=torch.float32).reshape(size, 1, 1, 1).repeat(1, 1, 4, 4)
    return BatchLoader(
        TensorBatches(x, torch.arange(size), augment, seed),
        batch_size,
        shuffle=True,
        seed=seed,
        num_workers=num_workers,
    )


def test_every_example_once_per_epoch_in_a_new_seeded_order():
    loader = make_loader()
    first, second = epoch_batches(loader), epoch_batches(loader)
    for epoch in (first, second):
        assert len(epoch) == len(loader) == 7
        assert sorted(torch.cat([y for _, y in epoch]).tolist()) == list(range(50))
    assert torch.cat([y for _, y in first]).tolist() != torch.cat([y for _, y in second]).tolist()
    again = make_loader()
    assert [y.tolist() for _, y in epoch_batches(again)] == [y.tolist() for _, y in first]


def test_resuming_mid_epoch_continues_the_same_order():
    full = make_loader(augment=random_shift(1))
    epochs = [epoch_batches(full) for _ in range(2)]
    resumed = make_loader(augment=random_shift(1))
    resumed.load_state_dict({"epoch": 1, "consumed": 3})
    rest = epoch_batches(resumed)
    assert len(rest) == 4
    for (xa, ya), (xb, yb) in zip(epochs[1][3:], rest, strict=False):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_a_finished_epoch_resumes_at_the_next_one():
    loader = make_loader()
    epochs = [epoch_batches(loader) for _ in range(2)]
    resumed = make_loader()
    resumed.load_state_dict({"epoch": 0, "consumed": len(resumed)})
    assert [y.tolist() for _, y in epoch_batches(resumed)] == [y.tolist() for _, y in epochs[1]]


def test_workers_compute_the_same_augmented_batches():
    in_process = epoch_batches(make_loader(0, random_shift(1)))
    with_workers = epoch_batches(make_loader(2, random_shift(1)))
    for (xa, ya), (xb, yb) in zip(in_process, with_workers, strict=False):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_distributed_processes_share_an_epoch_without_overlap():
    from ginlab.data.batching import EpochBatchSampler

    shards = [list(EpochBatchSampler(50, 8, shuffle=True, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 3  # 7 batches: the odd one out is dropped, equal step counts
    seen = [i for shard in shards for _, _, idx in shard for i in idx.tolist()]
    assert len(seen) == len(set(seen)) == 48
    single = list(EpochBatchSampler(50, 8, shuffle=True, seed=1))
    assert [p for _, p, _ in shards[0]] == [0, 2, 4] and torch.equal(shards[1][0][2], single[1][2])


def test_iterating_does_not_touch_the_global_random_state():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    epoch_batches(make_loader(0, random_shift(1)))
    assert torch.equal(before, torch.get_rng_state())


def test_shift_moves_images_by_at_most_one_pixel():
    x = torch.zeros(16, 1, 5, 5)
    x[:, :, 2, 2] = 1
    shifted = random_shift(1)(x, torch.Generator().manual_seed(0))
    rows, cols = torch.nonzero(shifted[:, 0], as_tuple=True)[1:]
    assert shifted.shape == x.shape and shifted.sum() == 16
    assert ((rows - 2).abs() <= 1).all() and ((cols - 2).abs() <= 1).all()
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 1


def test_digits_real_data_and_a_fixed_split():
    dm = Digits(val_fraction=0.15, test_fraction=0.15)
    sizes = {name: len(dm.split(name)[1]) for name in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797 and sizes["val"] == sizes["test"] == 270
    assert dm.input_shape == (1, 8, 8)
    x, y = dm.split("train")
    assert x.min() >= 0 and x.max() <= 1 and set(y.tolist()) == set(range(10))
    other = Digits(val_fraction=0.15, test_fraction=0.15)
    assert torch.equal(other.split("test")[1], dm.split("test")[1])  # the same split every time


def test_digits_are_sklearns_digits_without_importing_sklearn():
    from sklearn.datasets import load_digits

    from ginlab.data.digits import _digits

    images, target = _digits()
    expected = load_digits()
    assert np.array_equal(images, expected.images) and np.array_equal(target, expected.target)
    assert images.dtype == expected.images.dtype and target.dtype == np.int64


def test_mnist_ships_5000_real_images():
    dm = MNIST(val_fraction=0.1, test_fraction=0.1)
    assert dm.input_shape == (1, 28, 28)
    assert sum(len(dm.split(s)[1]) for s in ("train", "val", "test")) == 5000


def write_cifar_files(folder, per_file=20, seed=0):
    """Files in the official CIFAR-10 binary layout: per image 1 label byte then 3x32x32 pixel bytes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, per_file, dtype=np.uint8)
        pixels = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        np.concatenate([labels[:, None], pixels], axis=1).tofile(folder / name)
    return folder


def test_cifar10_reads_the_official_binary_format(tmp_path):
    folder = write_cifar_files(tmp_path / "cifar-10-batches-bin")
    dm = CIFAR10(data_dir=str(folder), val_fraction=0.1)
    assert dm.input_shape == (3, 32, 32)
    assert len(dm.split("test")[1]) == 20 and len(dm.split("train")[1]) + len(dm.split("val")[1]) == 100
    raw = np.fromfile(folder / "test_batch.bin", dtype=np.uint8).reshape(-1, 3073)
    x, y = dm.split("test")
    assert y.tolist() == raw[:, 0].tolist()
    assert torch.allclose(
        x[0, 1, 0, :4] * 255, torch.tensor(raw[0, 1 + 1024 : 1 + 1028], dtype=torch.float32)
    )


def test_cifar10_missing_data_names_the_path_and_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    with pytest.raises(MissingDataError, match="cifar-10-batches-bin") as error:
        CIFAR10().check()
    assert "data_batch_1.bin" in str(error.value) and "test_batch.bin" in str(error.value)
    assert str(tmp_path) in str(error.value)


class Three(__import__("ginlab.data", fromlist=["InMemoryDataModule"]).InMemoryDataModule):
    """A dataset of its own: 3 classes, labels 0, 1, 2."""

    def load(self):
        g = torch.Generator().manual_seed(0)
        return torch.rand(90, 1, 4, 4, generator=g), torch.arange(90) % 3


def test_the_number_of_classes_is_inferred_from_the_labels_or_checked_against_them():
    data = Three(batch_size=8)
    data.setup()
    assert data.num_classes == 3
    from ginlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"labels run from 0 to 2, outside 0 .. num_classes - 1"):
        Three(batch_size=8, num_classes=2).setup()
