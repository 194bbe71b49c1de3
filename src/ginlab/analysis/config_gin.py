"""Reading gin's operative config (config.gin) into a flat dict, without executing anything.

Used when a run folder has no config.json. gin's own parser reads the text (it evaluates literals only);
references stay strings ("@Adam", "@CNN()") and macros ("%LR") are replaced by their bound values.
"""

from __future__ import annotations

import tokenize
from typing import Any


class _Macro:
    def __init__(self, name: str):
        self.name = name


class _Delegate:
    """gin's ParserDelegate: says what a reference or a macro becomes (here: nothing is looked up)."""

    def configurable_reference(self, scoped_name: str, evaluate: bool) -> str:
        return f"@{scoped_name}()" if evaluate else f"@{scoped_name}"

    def macro(self, name: str) -> _Macro:
        return _Macro(name)


def parse_config_gin(text: str, filename: str = "config.gin") -> dict[str, Any]:
    """Flat {"scope/configurable.parameter": value} of a gin config text.

    Tuples become lists, as they are in config.json.

    Raises:
        ValueError: the text is not valid gin (the message names the line when gin does).
    """
    from gin import config_parser  # gin imports in ~0.03 s and pulls in nothing heavy

    values: dict[str, Any] = {}
    macros: dict[str, Any] = {}
    try:
        statements = list(config_parser.ConfigParser(text, _Delegate()))
    except (SyntaxError, ValueError, tokenize.TokenError) as error:
        raise ValueError(f"{filename} is not valid gin: {error}") from None
    for statement in statements:
        if not isinstance(statement, config_parser.BindingStatement):
            continue  # import and include statements name code and files, not values
        scope = f"{statement.scope}/" if statement.scope else ""
        if statement.arg_name:
            values[f"{scope}{statement.selector}.{statement.arg_name}"] = statement.value
        else:  # `NAME = value` binds a macro
            macros[f"{scope}{statement.selector}"] = statement.value
    return {key: _plain(value, macros) for key, value in values.items()}


def _plain(value: Any, macros: dict[str, Any], depth: int = 0) -> Any:
    if isinstance(value, _Macro):
        if value.name not in macros or depth > 20:
            return f"%{value.name}"
        return _plain(macros[value.name], macros, depth + 1)
    if isinstance(value, (list, tuple)):
        return [_plain(item, macros, depth) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item, macros, depth) for key, item in value.items()}
    return value
