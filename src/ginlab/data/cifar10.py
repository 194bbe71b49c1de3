"""CIFAR-10 read from DATA_DIR in the official binary format (no pickle, no download).

Expected layout (the "CIFAR-10 binary version" archive, unpacked):
    $DATA_DIR/cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin, test_batch.bin
Each file holds records of 1 label byte followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue,
row-major 32x32).
"""

import os
from pathlib import Path

import numpy as np
import torch

from ginlab.data.base import InMemoryDataModule
from ginlab.errors import ConfigError
from ginlab.registry import register_datamodule

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"


class MissingDataError(ConfigError, FileNotFoundError):
    """Data that must be provided by the user is not where it is expected."""


@register_datamodule("cifar10")
class CIFAR10(InMemoryDataModule):
    """Args (besides InMemoryDataModule's): data_dir (default $DATA_DIR/cifar-10-batches-bin)."""

    def __init__(self, data_dir: str | None = None, val_fraction: float = 0.1, **kwargs):
        super().__init__(val_fraction=val_fraction, **kwargs)
        root = data_dir or os.path.join(os.environ.get("DATA_DIR", "data"), "cifar-10-batches-bin")
        self.data_dir = Path(root)

    def check(self):
        missing = [f for f in [*TRAIN_FILES, TEST_FILE] if not (self.data_dir / f).is_file()]
        if missing:
            raise MissingDataError(
                f"CIFAR-10 data not found in {self.data_dir} (missing: {', '.join(missing)}).\n"
                f"Expected layout: {self.data_dir}/data_batch_1.bin ... data_batch_5.bin and test_batch.bin, "
                f"the binary version of CIFAR-10 ({RECORD} bytes per image: "
                f"label, then 32x32 R, G, B planes).\n"
                f"Unpack cifar-10-binary.tar.gz into $DATA_DIR (now {os.environ.get('DATA_DIR', 'unset')}) "
                f"or set cifar10.data_dir."
            )

    def _read(self, names):
        self.check()
        raw = np.concatenate([np.fromfile(self.data_dir / n, dtype=np.uint8) for n in names])
        if raw.size % RECORD:
            raise ConfigError(
                f"{self.data_dir}: the file sizes are not a multiple of the {RECORD}-byte record, so these "
                "are not CIFAR-10 binary files (or they were cut). Unpack cifar-10-binary.tar.gz again."
            )
        records = raw.reshape(-1, RECORD)
        x = torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
        return x, torch.from_numpy(records[:, 0].astype(np.int64))

    def load(self):
        return self._read(TRAIN_FILES)

    def load_test(self):
        return self._read([TEST_FILE])
