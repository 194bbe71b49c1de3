"""Configuration: gin files + bindings -> parsed, validated config, before anything is written.

Every error here is a `ConfigError` whose message says what was wrong, where it came from (file and line,
or the -b string) and the nearest valid names. `bin/train.py` maps it to exit code 2.
"""

import difflib
import inspect
import re
from pathlib import Path

import gin
import gin.config

# Parameters that may differ between a run and its reload without changing what is computed.
RELOAD_MAY_CHANGE = {
    "training_loop.n_epochs",
    "training_loop.reload",
    "training_loop.reload_allow_changes",
    "training_loop.log_every_n_steps",
    "training_loop.print_every_n_steps",
    "training_loop.checkpoint_every_n_steps",
    "training_loop.checkpoint_every_n_seconds",
    "training_loop.keep_checkpoints",
    "training_loop.heartbeat_seconds",
    "training_loop.mlflow_tracking_uri",
    "training_loop.mlflow_experiment",
    "training_loop.profiler",
}


class ConfigError(ValueError):
    """A configuration that cannot be run; the message is meant for the researcher, as is."""


def split_bindings(strings) -> list[str]:
    """Split each -b string on '#' and newlines; later bindings override earlier ones, as in gin."""
    out = []
    for s in strings or []:
        out.extend(part.strip() for part in re.split(r"[#\n]", s) if part.strip())
    return out


def load_configurables() -> None:
    """Import every module that defines ginlab configurables (gin must know them before parsing)."""
    from ginlab import callbacks, data, loop, models, optim  # noqa: F401


def parse(config_files, bindings, base_files=()) -> None:
    """Parse `base_files`, then `config_files`, then `bindings` into gin's global config.

    Raises ConfigError for a missing file, a syntax error, an unknown configurable or parameter, or a
    registered name (model, datamodule, callback) that does not exist.
    """
    load_configurables()
    for f in config_files:
        if not Path(f).is_file():
            raise ConfigError(f"Config file not found: {f}\nExpected a .gin file, e.g. configs/cnn.gin.")
    gin.clear_config()
    files = [str(f) for f in [*base_files, *config_files]]
    try:
        gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
    except (ValueError, SyntaxError, ImportError) as e:
        raise ConfigError(_explain(e, files, bindings)) from None
    check_registered_names(files, bindings)


def check_bindings(config_files, bindings) -> None:
    """Validate configs and bindings exactly as bin/train.py would, without building or writing anything."""
    parse(config_files, split_bindings([bindings] if isinstance(bindings, str) else bindings))


def check_registered_names(files, bindings) -> None:
    from ginlab.registry import CALLBACKS, DATAMODULES, MODELS

    for param, registry in [("model", MODELS), ("datamodule", DATAMODULES), ("callbacks", CALLBACKS)]:
        try:
            value = gin.query_parameter(f"training_loop.{param}")
        except ValueError:
            continue
        names = value if isinstance(value, (list, tuple)) else [value]
        for name in names:
            if isinstance(name, str) and name not in registry:
                where = locate(f"training_loop.{param}", files, bindings)
                raise ConfigError(f"{registry.unknown_message(name)}\n  In {where}")


def locate(param: str, files, bindings) -> str:
    """Where the last binding of `param` came from: 'file "x.gin", line 3' or "-b 'a.b=1'"."""
    short = param.split(".", 1)[1]
    pattern = re.compile(rf"^\s*([\w./]*\b)?{re.escape(param.split('.')[0])}\.{re.escape(short)}\s*=")
    found = "(default value)"
    for f in files:
        for i, line in enumerate(Path(f).read_text().splitlines(), 1):
            if pattern.match(line):
                found = f'file "{f}", line {i}: {line.strip()}'
    for b in bindings:
        if pattern.match(b):
            found = f"-b '{b}'"
    return found


def _explain(error: Exception, files, bindings) -> str:
    """gin's message (which names the bad name and where it is) plus the nearest valid names."""
    message = str(error)
    if m := re.search(r"In bindings string line (\d+)", message):
        index = int(m.group(1)) - 1
        if 0 <= index < len(bindings):
            message = message.replace(m.group(0), f"In -b '{bindings[index]}'")
    if m := re.match(r"No configurable matching '([^']+)'", message):
        names = configurable_names()
        message += _suggest(m.group(1), names, "Configurables")
    elif m := re.match(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", message):
        params = parameter_names(m.group(1))
        message += _suggest(m.group(2), params, f"Parameters of {m.group(1)}")
    elif isinstance(error, ImportError):
        message += "\nA module imported from a .gin file must be importable: check its name and PYTHONPATH."
    return message


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


def flat_config(operative: bool = True) -> dict:
    """gin's config as a flat dict {"configurable.param": value} with JSON-friendly values.

    operative=True: every value the run actually used (defaults included); False: only what was bound.
    """
    config = gin.config._OPERATIVE_CONFIG if operative else gin.config._CONFIG
    registry = gin.config._REGISTRY
    flat = {}
    for (scope, selector), params in config.items():
        try:
            name = registry.minimal_selector(selector)
        except KeyError:
            name = selector
        prefix = f"{scope}/{name}" if scope else name
        for param, value in params.items():
            flat[f"{prefix}.{param}"] = to_json_value(value)
    return dict(sorted(flat.items()))


def to_json_value(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    return repr(value)  # configurable references print as '@name', macros as '%name'


def differences(saved: dict, new: dict, allowed=RELOAD_MAY_CHANGE) -> list[str]:
    """Bound values in `new` that differ from the run's `saved` flat config, except allowed ones."""
    diffs = []
    for key, value in new.items():
        if key in allowed or key.startswith("training_loop.save_dir"):
            continue
        if key not in saved:
            diffs.append(f"  {key}: not set in the saved run -> {value!r}")
        elif saved[key] != value:
            diffs.append(f"  {key}: {saved[key]!r} -> {value!r}")
    return diffs
