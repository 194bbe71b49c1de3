"""torch optimizers and LR schedulers, configurable from gin.

    training_loop.optimizer = @torch.optim.AdamW
    torch.optim.AdamW.lr = 1e-3
    training_loop.lr_scheduler = @torch.optim.lr_scheduler.CosineAnnealingLR
    torch.optim.lr_scheduler.CosineAnnealingLR.T_max = 20

Registered here one by one, rather than with gin.torch.external_configurables, which also registers
deprecated torch classes and warns on import.
"""

import inspect

import gin
import torch


def _register_all(module, base, gin_module: str) -> None:
    for name, cls in vars(module).items():
        if inspect.isclass(cls) and issubclass(cls, base) and cls is not base and not name.startswith("_"):
            gin.external_configurable(cls, name=name, module=gin_module)


_register_all(torch.optim, torch.optim.Optimizer, "torch.optim")
_register_all(torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler, "torch.optim.lr_scheduler")
