"""Configuration, with gin only (no torch): parse files and bindings with helpful errors, check bound values,
read gin text without executing it, store values as used, and decide what a reload may change.

    parse(config_files, bindings)        # gin's global config, or a ConfigError naming the bad binding
    flat_config()                        # {"training_loop.n_epochs": 8, "Adam.lr": 0.003, ...}
    read_gin(text)                       # the same from a config.gin, without executing anything
"""

from ginlab.config.checks import check_bool, check_choice, check_int, check_ints, check_number
from ginlab.config.explain import locate
from ginlab.config.parse import bad_value, parse, sources, split_bindings
from ginlab.config.reader import read_gin
from ginlab.config.reload import Change, classify
from ginlab.config.renames import RENAMED, upgrade_text
from ginlab.config.values import flat_config, minimal_name, to_json_value
from ginlab.errors import ConfigError

__all__ = [
    "RENAMED",
    "Change",
    "ConfigError",
    "bad_value",
    "check_bool",
    "check_choice",
    "check_int",
    "check_ints",
    "check_number",
    "classify",
    "flat_config",
    "locate",
    "minimal_name",
    "parse",
    "read_gin",
    "sources",
    "split_bindings",
    "to_json_value",
    "upgrade_text",
]
