"""gin files + bindings -> gin's global config, checked: every error names the bad value, where it came
from and what would be valid, before anything is built or written.

The modules that define configurables must be imported before parsing (gin refuses names it does not know):
the training layer does that for its callers (`ginlab.training.configure`).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import gin
import gin.config

from ginlab.config.explain import explain, locate
from ginlab.errors import ConfigError

# The files and bindings of the last parse: where a value came from, for messages about it (`bad_value`).
_SOURCES: tuple[list[str], list[str]] = ([], [])


def split_bindings(strings) -> list[str]:
    """Split each -b string on '#' and newlines; later bindings override earlier ones, as in gin."""
    out = []
    for s in strings or []:
        out.extend(part.strip() for part in re.split(r"[#\n]", s) if part.strip())
    return out


def parse(config_files, bindings, base_text: str | None = None) -> None:
    """Parse `base_text`, then `config_files`, then `bindings` into gin's global config (cleared first).

    `base_text` is a run's own saved config (config.gin), which a reload or an evaluation starts from.

    An `include` in a file is looked up beside that file first, then in the working directory.

    Raises:
        ConfigError: a missing or unreadable file, a syntax error, an unknown configurable or parameter, a
            value that is not a gin value (an unquoted string), a binding in a scope nothing enters, or a
            registered name (model, datamodule, callback) that does not exist.
    """
    global _SOURCES
    files = [str(f) for f in config_files]
    bindings = list(bindings)
    for f in files:
        _check_readable(f)
    _SOURCES = (files, bindings)
    gin.clear_config()
    try:
        with _includes_beside_their_file():
            if base_text:
                _parse_saved(base_text)
            gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
    except ConfigError as error:
        raise ConfigError(str(error)) from None
    except (ValueError, SyntaxError, ImportError, OSError, TypeError) as error:
        raise ConfigError(explain(error, files, bindings)) from None
    check_scopes(files, bindings)
    check_registered_names(files, bindings)


def _parse_saved(text: str) -> None:
    try:
        gin.parse_config(text)
    except (ValueError, SyntaxError, ImportError) as error:
        raise ConfigError(
            f"The run's saved configuration (config.gin) cannot be parsed: {error}. A configurable it names "
            "may no longer exist in this code (renamed or removed since the run started)."
        ) from None


def sources() -> tuple[list[str], list[str]]:
    """(config files, bindings) of the last parse."""
    return _SOURCES


def bad_value(name: str, value, expected: str) -> ConfigError:
    """A ConfigError for a bound value that is not valid: `name = value (where): expected ...`.

    Args:
        name: the binding, e.g. "toy.batch_size".
        value: the value it has.
        expected: what would be valid, e.g. "a positive integer, e.g. 64".
    """
    where = locate(name, *_SOURCES)
    return ConfigError(f"{name} = {value!r} ({where}): expected {expected}.")


def _check_readable(path: str) -> None:
    file = Path(path)
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "not found"
        raise ConfigError(f"Config file {what}: {path}\nExpected a .gin file, e.g. configs/cnn.gin.")
    try:
        file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path} is not a gin config file: it is not UTF-8 text (byte "
            f"{error.object[error.start]:#04x} at offset {error.start}). Expected gin statements such as "
            "`configurable.param = value`."
        ) from None


@contextlib.contextmanager
def _includes_beside_their_file():
    """While parsing, `include 'x.gin'` is looked up beside the file that includes it, then in the working
    directory. gin alone looks only in its search paths (the working directory), so a config that includes
    its neighbour would work only when started from its own folder."""
    original = gin.config.parse_config_file
    folders: list[Path] = []

    def parse_file(config_file, skip_unknown=False, print_includes_and_imports=False):
        path = Path(config_file)
        if not path.is_absolute():
            candidates = [folders[-1] / path] if folders else []
            candidates.append(path)
            path = next((c for c in candidates if c.is_file()), None)
            if path is None:
                looked = " and ".join(f"{c.parent}/" if str(c.parent) != "." else "the working directory"
                                      for c in candidates)  # fmt: skip
                raise ConfigError(f"include {config_file!r}: no such file (looked in {looked})")
        elif not path.is_file():
            raise ConfigError(f"include {config_file!r}: no such file")
        _check_readable(str(path))
        folders.append(path.parent)
        try:
            return original(str(path), skip_unknown, print_includes_and_imports)
        finally:
            folders.pop()

    gin.config.parse_config_file = parse_file
    try:
        yield
    finally:
        gin.config.parse_config_file = original


def check_scopes(files, bindings) -> None:
    """Refuse a binding in a scope that no reference enters: gin would accept it and silently ignore it."""
    entered = set()
    for params in gin.config._CONFIG.values():
        for value in params.values():
            entered |= _scopes_entered(value)
    for (scope, selector), params in gin.config._CONFIG.items():
        if not scope or selector == "gin.macro":  # a macro's binding is stored under its name as the scope
            continue
        for part in scope.split("/"):
            if part in entered:
                continue
            name = f"{scope}/{gin.config._REGISTRY.minimal_selector(selector)}.{next(iter(params), '')}"
            known = ", ".join(sorted(entered)) or "none"
            raise ConfigError(
                f"{name} ({locate(name, files, bindings)}) is bound in scope {part!r}, which nothing enters, "
                f"so gin would ignore it. A scope is entered through a reference that names it, e.g. "
                f"training_loop.optimizer = @{part}/torch.optim.Adam. Scopes this config enters: {known}."
            )


def _scopes_entered(value) -> set[str]:
    if isinstance(value, gin.config.ConfigurableReference):
        scoped = value.scoped_selector
        return set(scoped.split("/")[:-1]) if value.selector != "gin.macro" else set()
    if isinstance(value, (list, tuple)):
        return set().union(*map(_scopes_entered, value)) if value else set()
    if isinstance(value, dict):
        return set().union(*map(_scopes_entered, value.values())) if value else set()
    return set()


def check_registered_names(files, bindings) -> None:
    """Every registered name the loop is given (model, datamodule, callbacks) exists."""
    from ginlab.registry import CALLBACKS, DATAMODULES, MODELS

    for param, registry in [("model", MODELS), ("datamodule", DATAMODULES), ("callbacks", CALLBACKS)]:
        try:
            value = gin.query_parameter(f"training_loop.{param}")
        except ValueError:
            continue
        names = value if isinstance(value, (list, tuple)) else [value]
        for name in names:
            if not isinstance(name, str):
                where = locate(f"training_loop.{param}", files, bindings)
                example = next(iter(registry), "name")
                raise ConfigError(
                    f"training_loop.{param} = {value!r} ({where}): expected a registered {registry.kind} name "
                    f"in quotes, e.g. {example!r}."
                )
            if name not in registry:
                where = locate(f"training_loop.{param}", files, bindings)
                raise ConfigError(f"{registry.unknown_message(name)}\n  In {where}")
