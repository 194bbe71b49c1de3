"""Models, one per file, registered by name: mlp, cnn."""

from ginlab.models import cnn, mlp  # noqa: F401  (importing registers them)
