"""The search space: the gin parameters a search varies, each over a range or a list of values.

    space = {
        "torch.optim.Adam.lr": LogUniform(1e-4, 1e-1),
        "cnn.dropout": Uniform(0.0, 0.5),
        "digits.batch_size": IntRange(16, 128, log=True),
        "torch.optim.Adam.weight_decay": Choice([0, 1e-5, 1e-4]),
    }

Each dimension checks itself (`problems`), becomes an Optuna distribution (`distribution`), is written into
the
study's record as plain JSON (`describe`), and turns a sampled value into a gin literal (`gin_value`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ginlab.experiments.grid import format_value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high]."""

    low: float
    high: float

    log = False

    def problems(self) -> list[str]:
        return _range_problems(self.low, self.high, self.log, "float", allow_equal=False)

    def distribution(self) -> BaseDistribution:
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def describe(self) -> dict:
        return {"type": type(self).__name__, "low": self.low, "high": self.high}

    def gin_value(self, value: Any) -> str:
        return format_value(float(value))

    def grid_values(self) -> list | None:
        return None


@dataclasses.dataclass(frozen=True)
class LogUniform(Uniform):
    """A float drawn uniformly on a log scale from [low, high] (both > 0): learning rates, weight decay."""

    log = True


@dataclasses.dataclass(frozen=True)
class IntRange:
    """An integer from low to high, both included, every `step` (or on a log scale with log=True)."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def problems(self) -> list[str]:
        problems = _range_problems(self.low, self.high, self.log, "int", allow_equal=True)
        if not isinstance(self.step, int) or isinstance(self.step, bool) or self.step < 1:
            problems.append(f"step {self.step!r} must be a positive integer")
        elif self.log and self.step != 1:
            problems.append(f"step {self.step} cannot be combined with log=True (Optuna draws those by 1)")
        elif not problems and (self.high - self.low) % self.step:
            problems.append(f"high - low ({self.high - self.low}) must be a multiple of step {self.step}")
        return problems

    def distribution(self) -> BaseDistribution:
        return IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def describe(self) -> dict:
        return {"type": "IntRange", "low": self.low, "high": self.high, "step": self.step, "log": self.log}

    def gin_value(self, value: Any) -> str:
        return format_value(int(value))

    def grid_values(self) -> list | None:
        return list(range(self.low, self.high + 1, self.step))


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a list of values: numbers, strings, booleans, None, gin references ("@torch.optim.SGD") or
    tuples/lists (written into the config as gin literals)."""

    values: list | tuple

    def problems(self) -> list[str]:
        if isinstance(self.values, (str, bytes)) or not isinstance(self.values, (list, tuple)):
            return [f"expected a list of values, got {self.values!r}"]
        if not self.values:
            return ["the list of values is empty: give at least one value"]
        problems = []
        texts = []
        for value in self.values:
            try:
                texts.append(format_value(value))
            except ValueError as error:
                problems.append(str(error))
        if len(set(texts)) != len(texts):
            problems.append(f"values repeat: {list(self.values)}")
        return problems

    def _encoded(self) -> bool:
        """Optuna keeps only None, bools, numbers and strings: other values are kept as their gin text."""
        return any(v is not None and not isinstance(v, (bool, int, float, str)) for v in self.values)

    def distribution(self) -> BaseDistribution:
        if self._encoded():
            return CategoricalDistribution([format_value(v) for v in self.values])
        return CategoricalDistribution(list(self.values))

    def describe(self) -> dict:
        return {"type": "Choice", "values": [format_value(v) for v in self.values]}

    def gin_value(self, value: Any) -> str:
        return value if self._encoded() else format_value(value)

    def grid_values(self) -> list | None:
        return list(self.distribution().choices)


Dimension = Uniform | LogUniform | IntRange | Choice


def _range_problems(low, high, log: bool, kind: str, allow_equal: bool) -> list[str]:
    check = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if kind == "int" else _is_number
    bad = [f"{name} {value!r} is not a finite {kind}" for name, value in (("low", low), ("high", high))
           if not check(value)]  # fmt: skip
    if bad:
        return bad
    if high < low or (high == low and not allow_equal):
        what = "inverted" if high < low else "empty"
        return [f"the range [{low}, {high}] is {what}: low must be below high"]
    if log and low <= 0:
        return [f"a log range needs bounds above 0, got low = {low} (use Uniform, or a positive low)"]
    return []


def check_space(space: dict) -> list[str]:
    """Every problem of the space's dimensions, each naming its parameter (empty when the space is valid)."""
    if not isinstance(space, dict) or not space:
        return ["the space is empty: give at least one gin parameter and its range, e.g. "
                '{"torch.optim.Adam.lr": LogUniform(1e-4, 1e-1)}']  # fmt: skip
    problems = []
    for name, dimension in space.items():
        if not isinstance(name, str) or "." not in name:
            problems.append(f"{name!r}: expected a gin parameter, written configurable.parameter")
        elif not isinstance(dimension, (Uniform, IntRange, Choice)):
            problems.append(f"{name}: expected Uniform, LogUniform, IntRange or Choice, got {dimension!r}")
        else:
            problems += [f"{name}: {problem}" for problem in dimension.problems()]
    return problems


def describe_space(space: dict) -> dict:
    """The space as plain JSON, the form the study records and compares."""
    return {name: dimension.describe() for name, dimension in space.items()}


def example_point(space: dict) -> dict[str, str]:
    """{parameter: gin literal} with each dimension's low end (or first value), for `prepare`'s gin check."""
    point = {}
    for name, dimension in space.items():
        if isinstance(dimension, Choice):
            point[name] = format_value(dimension.values[0])
        else:
            point[name] = dimension.gin_value(dimension.low)
    return point


def all_corners(space: dict) -> list[dict[str, str]]:
    """Points that together hold every dimension's ends and every choice (checked with gin by `prepare`)."""
    points = []
    for name, dimension in space.items():
        values = (
            [format_value(v) for v in dimension.values]
            if isinstance(dimension, Choice)
            else [dimension.gin_value(dimension.low), dimension.gin_value(dimension.high)]
        )
        for value in values[1:] if name != next(iter(space)) else values:
            points.append({**example_point(space), name: value})
    return points or [example_point(space)]
