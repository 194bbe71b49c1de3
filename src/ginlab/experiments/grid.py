"""Grids: gin parameter values -> one named point per run.

A grid is either a dict {gin parameter: [values]} (every combination, first parameter slowest) or a list of
dicts (exactly those points). Each point gets a readable, filesystem-safe name built from the short names
of its parameters: {"torch.optim.Adam.lr": 0.001, "training_loop.seed": 0} -> "lr=0.001_seed=0".
"""

import itertools
import re


def expand_grid(grid) -> list[dict]:
    """Return the points of `grid` as a list of {parameter: value} dicts, in a stable order.

    Raises:
        ValueError: an empty grid, a parameter with no values, or points that repeat.
    """
    if isinstance(grid, dict):
        if not grid:
            raise ValueError("The grid is empty: give at least one parameter with at least one value.")
        for name, values in grid.items():
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                raise ValueError(f"Grid parameter {name!r}: expected a list of values, got {values!r}.")
            if len(list(values)) == 0:
                raise ValueError(f"Grid parameter {name!r} has no values.")
        names = list(grid)
        points = [
            dict(zip(names, combination, strict=True)) for combination in itertools.product(*grid.values())
        ]
    else:
        points = [dict(point) for point in grid]
        if not points:
            raise ValueError("The grid is empty: give at least one point.")
    seen = set()
    for point in points:
        key = tuple(sorted((name, format_value(value)) for name, value in point.items()))
        if key in seen:
            raise ValueError(f"The grid repeats the point {point}.")
        seen.add(key)
    return points


def grid_parameters(points: list[dict]) -> list[str]:
    """All parameter names of the points, in order of first appearance."""
    return list(dict.fromkeys(name for point in points for name in point))


def short_names(parameters: list[str]) -> dict[str, str]:
    """The shortest unambiguous dotted suffix of each parameter: torch.optim.Adam.lr -> lr."""
    short = {}
    for name in parameters:
        parts = re.split(r"[./]", name)
        for length in range(1, len(parts) + 1):
            candidate = ".".join(parts[-length:])
            clashes = [
                other
                for other in parameters
                if other != name and re.split(r"[./]", other)[-length:] == parts[-length:]
            ]
            if not clashes:
                break
        short[name] = candidate
    return short


def format_value(value) -> str:
    """A gin literal for `value` (numbers as Python writes them, strings quoted)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if value.startswith(("@", "%")):  # a gin reference or macro, written as is
            return value
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(format_value(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    raise ValueError(f"Grid value {value!r} ({type(value).__name__}) cannot be written as a gin literal.")


def point_name(point: dict, short: dict[str, str]) -> str:
    """A filesystem-safe run name: lr=0.001_seed=0."""
    parts = []
    for name, value in point.items():
        text = value.lstrip("@%") if isinstance(value, str) else format_value(value)
        text = re.sub(r"[^A-Za-z0-9.+\-]+", "-", text).strip("-") or "x"
        parts.append(f"{short[name]}={text}")
    return "_".join(parts)
