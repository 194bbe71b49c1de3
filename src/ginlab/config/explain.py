"""Error messages about a configuration: where a binding came from, and the nearest valid names."""

from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path

import gin
import gin.config

from ginlab.config.renames import RENAMED


def locate(param: str, files, bindings) -> str:
    """Where the last binding of `param` came from: 'file "x.gin", line 3: ...' or "-b 'a.b=1'"."""
    scope, _, name = param.rpartition("/")
    configurable, _, short = name.rpartition(".")
    last = configurable.split(".")[-1]
    scope_part = rf"{re.escape(scope)}/" if scope else r"(?:[\w.]+/)?"
    pattern = re.compile(rf"^\s*{scope_part}([\w.]*\.)?{re.escape(last)}\.{re.escape(short)}\s*=")
    found = "(default value)"
    for f in files:
        try:
            lines = Path(f).read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for i, line in enumerate(lines, 1):
            if pattern.match(line):
                found = f'file "{f}", line {i}: {line.strip()}'
    for b in bindings:
        if pattern.match(b):
            found = f"-b '{b}'"
    return found


def explain(error: Exception, files, bindings) -> str:
    """gin's message (which names the bad name and where it is) plus what would be valid."""
    message = str(error)
    if m := re.search(r"In bindings string line (\d+)", message):
        index = int(m.group(1)) - 1
        if 0 <= index < len(bindings):
            message = message.replace(m.group(0), f"In -b '{bindings[index]}'")
    if m := re.match(r"No configurable matching '([^']+)'", message):
        message += _suggest(m.group(1), configurable_names(), "Configurables")
    elif m := re.match(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", message):
        moved = RENAMED.get(f"{m.group(1).split('.')[-1]}.{m.group(2)}")
        if moved:
            message += f'\nIt moved: use {moved} (see README, "Settings that moved").'
        else:
            message += _suggest(m.group(2), parameter_names(m.group(1)), f"Parameters of {m.group(1)}")
    elif "malformed node or string" in message:
        message = _unquoted(message, bindings)
    elif isinstance(error, ImportError):
        message += "\nA module imported from a .gin file must be importable: check its name and PYTHONPATH."
    elif isinstance(error, SyntaxError) and not re.search(r"\bIn file\b|In -b|\.gin", message):
        message += f"\n(while reading {', '.join(files) or 'the bindings'})"
    return message


def _unquoted(message: str, bindings) -> str:
    """gin's "malformed node or string ... <ast.Name object ...>" for a bare word: strings need quotes."""
    token = re.search(r"Failed to parse token '([^']*)' \(line (\d+)\)", message)
    word, line = (token.group(1), int(token.group(2))) if token else ("the value", 0)
    file = re.search(r'In file "[^"]+", line \d+', message)
    if file:
        where = file.group(0)
    elif 0 < line <= len(bindings):
        where = f"In -b '{bindings[line - 1]}'"
    else:
        where = "In the bindings"
    binding = re.search(r"-b '([^'=]*)=", where)
    hint = f' (write {binding.group(1).strip()} = "{word}")' if binding else ""
    return (
        f"{word} is not a gin value. Strings need quotes{hint}; references to a configurable start with @ "
        f"(@torch.optim.SGD), macros with % (%LR).\n  {where}"
    )


def _suggest(name: str, choices, label: str) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if not close:
        close = [c for c in choices if c.split(".")[-1] == name.split(".")[-1]][:3]
    text = f"\nDid you mean: {', '.join(close)}?" if close else ""
    if len(choices) <= 40:
        text += f"\n{label}: {', '.join(sorted(choices))}"
    return text


def configurable_names() -> list[str]:
    registry = gin.config._REGISTRY  # gin has no public listing of configurables
    names = set()
    for selector in registry._selector_map:
        names.add(registry.minimal_selector(selector))
        names.add(selector)
    return sorted(names)


def parameter_names(configurable: str) -> list[str]:
    try:
        match = gin.config._REGISTRY.get_match(configurable)
        fn = match.wrapped
        target = fn.__init__ if inspect.isclass(fn) else fn
        hidden = {"self", "args", "kwargs", *(match.denylist or ())}
        return [p for p in inspect.signature(target).parameters if p not in hidden]
    except Exception:
        return []
