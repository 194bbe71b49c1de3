"""Training: the only layer that imports Lightning. Importing it makes every configurable known to gin:
the models and datamodules, torch's optimizers and schedules, ginlab's callbacks, the Trainer's settings and
training_loop itself.

    from ginlab.training import training_loop
"""

from ginlab import data, models  # noqa: F401  (importing registers them)
from ginlab.training import optim  # noqa: F401  (torch optimizers and schedules for gin)
from ginlab.training.loop import Launch, training_loop

__all__ = ["Launch", "training_loop"]
