"""gin's parsed config as a flat dict of JSON values, as stored in config.json and read back by load_C.

Values are stored as used: a macro is replaced by its value (`%LR` -> 0.005, and LR itself is no key), a
reference is its text (`"@torch.optim.Adam"`), tuples become lists.
"""

from __future__ import annotations

import gin
import gin.config


def flat_config(operative: bool = True) -> dict:
    """gin's config as {"configurable.param": value} (scoped: "scope/configurable.param"), sorted by key.

    Args:
        operative: True for every value the run actually used (defaults included, after the run built its
            objects); False for only what the config files and bindings bound.
    """
    config = gin.config._OPERATIVE_CONFIG if operative else gin.config._CONFIG
    registry = gin.config._REGISTRY
    flat = {}
    for (scope, selector), params in config.items():
        if selector == "gin.macro":  # a macro's own binding: its value is in the bindings that use it
            continue
        try:
            name = registry.minimal_selector(selector)
        except KeyError:
            name = selector
        prefix = f"{scope}/{name}" if scope else name
        for param, value in params.items():
            flat[f"{prefix}.{param}"] = to_json_value(value)
    return dict(sorted(flat.items()))


def to_json_value(value):
    """A value of gin's config as JSON: macros resolved, references as "@name" / "@name()" text."""
    if isinstance(value, gin.config.ConfigurableReference):
        if value.selector == "gin.macro":
            return to_json_value(gin.query_parameter(str(value)))  # "%LR": the value bound to LR
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    return repr(value)


def minimal_name(reference: str) -> str | None:
    """ "@torch.optim.Adam" -> "Adam": the name the flat config's keys use for that configurable."""
    if not isinstance(reference, str) or not reference.startswith("@"):
        return None
    selector = reference[1:].removesuffix("()").split("/")[-1]
    try:
        return gin.config._REGISTRY.minimal_selector(selector)
    except KeyError:
        return selector.split(".")[-1]
