"""GPU utilisation through NVIDIA's management library (NVML, the `nvidia-ml-py` package), where there is one.

torch reports a process's own peak allocated and reserved memory; how busy the GPU was only NVML knows. NVML
numbers devices in its own (PCI) order, whatever CUDA_VISIBLE_DEVICES says, so the device is found by its
UUID, which torch gives; by the CUDA_VISIBLE_DEVICES entry as a fallback. Without the library, a driver or the
device, `GpuMonitor.open` returns None and the utilisation column is absent.
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger(__name__)


class GpuMonitor:
    """The mean utilisation (percent of time a kernel ran) of one GPU over the samples since the last take."""

    def __init__(self, nvml, handle):
        self.nvml, self.handle = nvml, handle
        self._sum, self._count = 0.0, 0

    @classmethod
    def open(cls, uuid: str | None, index: int | None) -> GpuMonitor | None:
        """The monitor of the GPU with this UUID (torch's) or CUDA index; None where NVML cannot see it."""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as error:  # no package, no library, no driver
            log.debug("no GPU utilisation: NVML is not available (%s)", error)
            return None
        handle = _handle(pynvml, uuid, index)
        if handle is None:
            log.debug("no GPU utilisation: NVML does not know the device (uuid %s, index %s)", uuid, index)
            pynvml.nvmlShutdown()
            return None
        return cls(pynvml, handle)

    def sample(self) -> None:
        self._sum += self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
        self._count += 1

    def take_mean(self) -> float | None:
        """The mean of the samples since the last call (None without samples), and start again."""
        if not self._count:
            return None
        mean = self._sum / self._count
        self._sum, self._count = 0.0, 0
        return mean

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()


def _handle(nvml, uuid: str | None, index: int | None):
    if uuid:
        wanted = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        try:
            return nvml.nvmlDeviceGetHandleByUUID(wanted)
        except Exception:
            pass
    if index is None:
        return None
    visible = [
        entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()
    ]
    entry = visible[index] if index < len(visible) else str(index)
    try:
        if entry.isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(entry))
        return nvml.nvmlDeviceGetHandleByUUID(entry)
    except Exception:
        return None
