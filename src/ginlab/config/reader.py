"""Reading gin config text into a flat dict without executing anything, in one of two modes.

gin's own parser reads the text, so comments, line continuations, multi-line values, binding blocks and
strings holding '#' are read exactly as bin/train.py reads them; nothing is imported, looked up in gin's
registry or called. Keys are gin's binding names: "configurable.param", "scope/configurable.param".

mode="values" (load_C on a run folder's config.gin): typed values, as config.json has them. Tuples become
    lists; references stay strings ("@torch.optim.Adam", "@CNN()"); macros are replaced by their values and
    are not keys themselves (a macro bound nowhere stays "%NAME").
mode="text" (experiments: was a run folder started with the prepared config?): each value as one canonical
    text, so that layout and comments never count and `1e-3` equals `0.001`: literals as Python's repr
    writes them, references "@name" / "@name()", macros "%NAME" (not resolved; a macro's own binding
    `LR = 0.1` is a key of its own, "LR").

Includes are followed when `root` is given, each path looked up as bin/train.py looks it up: beside the file
that includes it first, then relative to `root` (bin/train.py's working directory, the repository root): a
missing included file is the entry "include FILE": "missing", a file already being read "include FILE":
"included". Without `root` they are skipped: a run's config.gin (gin's operative config) has
none, and load_C reads nothing outside the run folder.
"""

from __future__ import annotations

import dataclasses
import tokenize
from pathlib import Path
from typing import Any, Literal

Mode = Literal["values", "text"]


@dataclasses.dataclass(frozen=True)
class Reference:
    """`@name` (the configurable itself) or `@name()` (evaluate: the result of calling it)."""

    name: str
    evaluate: bool

    def __str__(self) -> str:
        return f"@{self.name}()" if self.evaluate else f"@{self.name}"


@dataclasses.dataclass(frozen=True)
class Macro:
    """`%NAME`: the value bound to NAME."""

    name: str

    def __str__(self) -> str:
        return f"%{self.name}"


class _Delegate:
    """gin's ParserDelegate interface: says what a reference or macro becomes. Here: a record of its name.

    gin's own delegate would look names up in its registry, so a reference's text would depend on what
    the reading process happened to import.
    """

    def configurable_reference(self, scoped_name: str, evaluate: bool) -> Reference:
        return Reference(scoped_name, evaluate)

    def macro(self, name: str) -> Macro:
        return Macro(name)


def read_gin(
    text: str, filename: str = "<text>", *, mode: Mode = "values", root: str | Path | None = None
) -> dict[str, Any]:
    """The bindings of a gin config text as {"scope/configurable.param": value}; see the module docstring.

    Later bindings of a name win, as in gin.

    Args:
        text: the gin text.
        filename: where it comes from, for error messages.
        mode: "values" (typed values, macros resolved) or "text" (canonical text, macros kept).
        root: follow include statements (beside the including file, else relative to this folder); None skips
            them.

    Raises:
        ValueError: the text (or an included file) is not valid gin; the message names the file and line.
    """
    if mode not in ("values", "text"):
        raise ValueError(f"read_gin mode must be 'values' or 'text', not {mode!r}")
    bindings: dict[str, Any] = {}
    macros: dict[str, Any] = {}
    _read(text, filename, None if root is None else Path(root), frozenset(), bindings, macros)
    if mode == "text":
        return {key: value if key.startswith("include ") else _text(value) for key, value in bindings.items()}
    return {
        key: _value(value, macros)
        for key, value in bindings.items()
        if key not in macros  # a macro's own binding: its value is in the bindings that use it
    }


def _read(text: str, filename: str, root: Path | None, seen: frozenset, bindings: dict, macros: dict) -> None:
    """Add the text's bindings, in order, to `bindings` (macros also to `macros`), following includes."""
    from gin import config_parser  # gin imports in ~0.03 s; only readers of gin text pay it

    try:
        statements = list(config_parser.ConfigParser(text, _Delegate()))
    except (SyntaxError, ValueError, tokenize.TokenError) as error:
        raise ValueError(
            f"{filename} is not valid gin: {_problem(error)}. Expected gin statements such as "
            f"`configurable.param = value`; correct that line."
        ) from None
    for statement in statements:
        if isinstance(statement, config_parser.IncludeStatement) and root is not None:
            path = _find_include(statement.filename, filename, root)
            if not path.is_file():
                bindings[f"include {statement.filename}"] = "missing"
            elif path.resolve() in seen:  # an include cycle: gin would recurse forever
                bindings[f"include {statement.filename}"] = "included"
            else:
                _read(path.read_text(), str(path), root, seen | {path.resolve()}, bindings, macros)
        elif isinstance(statement, config_parser.BindingStatement):
            # Imports name code, not values; binding blocks (`Adam:` + indented lines) come as bindings.
            name = f"{statement.selector}.{statement.arg_name}" if statement.arg_name else statement.selector
            key = f"{statement.scope}/{name}" if statement.scope else name
            bindings[key] = statement.value
            if not statement.arg_name:  # `NAME = value` binds a macro
                macros[key] = statement.value


def _find_include(name: str, including: str, root: Path) -> Path:
    """Where bin/train.py finds an included file: beside the including file, else relative to root."""
    path = Path(name)
    if path.is_absolute():
        return path
    beside = Path(including).parent / path
    return beside if including != "<text>" and beside.is_file() else root / path


def _problem(error: Exception) -> str:
    """gin's complaint with its line (gin's own message names no file for text it is given)."""
    if isinstance(error, SyntaxError):
        shown = f": {error.text.strip()!r}" if error.text and error.text.strip() else ""
        return f"line {error.lineno}: {error.msg.rstrip('.')}{shown}"
    # error.args: ("EOF in multi-line ...", (line, col))
    if isinstance(error, tokenize.TokenError) and len(error.args) == 2:
        return f"line {error.args[1][0]}: {error.args[0]} (a bracket or string left open)"
    return str(error)


def _text(value: Any) -> str:
    """One text per value: repr for literals (containers spelled out so references inside read as written)."""
    if isinstance(value, (Reference, Macro)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_text, value)) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_text, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_text(key)}: {_text(item)}" for key, item in value.items()) + "}"
    return repr(value)


def _value(value: Any, macros: dict[str, Any], resolving: frozenset = frozenset()) -> Any:
    """A JSON-like value, as in config.json: macros resolved, references as text, tuples as lists.

    A macro bound nowhere, or one met again while resolving it (A = %B, B = %A), stays "%NAME".
    """
    if isinstance(value, Macro):
        if value.name not in macros or value.name in resolving:
            return str(value)
        return _value(macros[value.name], macros, resolving | {value.name})
    if isinstance(value, Reference):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_value(item, macros, resolving) for item in value]
    if isinstance(value, dict):
        return {_key(key): _value(item, macros, resolving) for key, item in value.items()}
    return value


def _key(key: Any) -> Any:
    return str(key) if isinstance(key, (Reference, Macro)) else key
