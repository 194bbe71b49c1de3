"""Registries: name -> model, datamodule or callback.

One decorator files a class (or factory) under a name AND makes it gin-configurable under that same name,
so a .gin file can both select it (`training_loop.model = "cnn"`) and configure it (`cnn.channels = 32`).
"""

import difflib

import gin


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists the registered names."""

    def __str__(self):  # KeyError would print the message with quotes around it
        return self.args[0]


class Registry(dict):
    """A plain dict from name to class, filled by `register`; lookups fail with the valid choices."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str):
        """Decorator: file the object under `name` and make it gin-configurable as `name`."""

        def decorator(obj):
            if name in self:
                raise ValueError(
                    f"{self.kind} {name!r} is registered twice: "
                    f"by {_where(self[name])} and by {_where(obj)}. "
                    f"Pick another name for one of them."
                )
            self[name] = gin.external_configurable(obj, name=name, module=None)
            _NAMES[obj] = name
            return obj

        return decorator

    def get(self, name, default=None):
        return super().get(name, default)

    def __missing__(self, name):
        raise UnknownNameError(self.unknown_message(name))

    def unknown_message(self, name) -> str:
        close = difflib.get_close_matches(str(name), list(self), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"Unknown {self.kind} {name!r}.{hint} "
            f"Registered {self.kind}s: {', '.join(sorted(self)) or '(none)'}. "
            f'A new {self.kind} is registered with @register_{self.kind}("name") in a module that is '
            f"imported (a module outside src/ can be imported from a .gin file with an `import` line)."
        )


def _where(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


_NAMES: dict[object, str] = {}  # registered object -> its name


def name_of(cls: type, default: str | None = None) -> str | None:
    """The name a class (or the nearest registered class it derives from) is registered and configured under,
    e.g. "toy": for messages that name a binding (`toy.batch_size = 0`)."""
    for base in getattr(cls, "__mro__", (cls,)):
        if base in _NAMES:
            return _NAMES[base]
    return default


MODELS = Registry("model")
DATAMODULES = Registry("datamodule")
CALLBACKS = Registry("callback")

register_model = MODELS.register
register_datamodule = DATAMODULES.register
register_callback = CALLBACKS.register
