"""Checks of bound values, with messages that name the binding, where it came from and what is valid.

Every layer checks its own settings with these before anything is written: the loop its parameters, each
callback its cadence, each datamodule and model its arguments. A failed check is a ConfigError (exit code 2).

    check_int("toy.batch_size", batch_size, minimum=1, example=64)
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

from ginlab.config.parse import bad_value


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int | None = None, optional: bool = False, example=None) -> None:
    """`value` is an integer (>= minimum), or None when optional."""
    if value is None and optional:
        return
    if not _is_int(value) or (minimum is not None and value < minimum):
        what = (
            "an integer"
            if minimum is None
            else {0: "an integer >= 0", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        )
        raise bad_value(name, value, _with(what, optional, example))


def check_number(
    name: str,
    value,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive: bool = False,
    optional: bool = False,
    example=None,
) -> None:
    """`value` is a number in [minimum, maximum] ((minimum, maximum) when exclusive), or None if optional."""
    if value is None and optional:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value  # not NaN
    if ok and minimum is not None:
        ok = value > minimum if exclusive else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if exclusive else value <= maximum
    if not ok:
        low = "" if minimum is None else f"{'>' if exclusive else '>='} {minimum}"
        high = "" if maximum is None else f"{'<' if exclusive else '<='} {maximum}"
        what = (
            "a number"
            + (f" {low}" if low else "")
            + (" and" if low and high else "")
            + (f" {high}" if high else "")
        )
        raise bad_value(name, value, _with(what, optional, example))


def check_choice(name: str, value, choices: Iterable, optional: bool = False) -> None:
    """`value` is one of `choices` (None also allowed when optional)."""
    choices = list(choices)
    if (value is None and optional) or any(value == c and type(value) is type(c) for c in choices):
        return
    listed = ", ".join(repr(c) for c in choices)
    raise bad_value(name, value, f"one of {listed}" + (" or None" if optional else ""))


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise bad_value(name, value, "True or False")


def check_ints(name: str, value, minimum: int = 1, example=None) -> None:
    """`value` is a list or tuple of integers >= minimum."""
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(_is_int(v) and v >= minimum for v in value)
    ):
        what = f"a non-empty tuple of integers >= {minimum}"
        raise bad_value(name, value, _with(what, False, example))


def _with(what: str, optional: bool, example) -> str:
    text = what + (", or None" if optional else "")
    return text + (f", e.g. {example!r}" if example is not None else "")
