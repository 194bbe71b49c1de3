"""config.gin into a flat dict of typed values: ginlab.gin_reader's "values" mode, under its older name."""

from ginlab.gin_reader import read_gin as parse_config_gin

__all__ = ["parse_config_gin"]
