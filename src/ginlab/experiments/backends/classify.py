"""Prepared runs and the state of their run folders: what `run` must do with each one.

A run folder (docs/run-folder.md) says what happened to a run: its meta.json status, and in configs/ the
config files and bindings it was started with. `inspect_run` compares those with the prepared run and decides:

    missing folder, or a folder without meta.json  -> start it
    finished with the prepared config              -> skip it
    interrupted, failed, stale (died silently)     -> reload it (-b training_loop.reload=True)
    running (fresh heartbeat)                      -> leave it to whoever runs it
    started with another config                    -> refuse it, naming the differences
"""

import dataclasses
import shlex
from pathlib import Path

from ginlab.config.reader import read_gin
from ginlab.config.reload import BOOKKEEPING, BOOKKEEPING_PREFIXES
from ginlab.errors import RunFolderError
from ginlab.runfolder import read_meta as read_run_meta
from ginlab.runfolder import run_status

RELOAD = "training_loop.reload=True"
IGNORED = {"training_loop.reload", "training_loop.reload_allow_changes"}


@dataclasses.dataclass
class Run:
    """One prepared run: a grid point, its run folder and the config files bin/train.py gets."""

    index: int
    name: str
    params: dict
    save_dir: Path
    config_files: list[str]

    def command(self, python: str = "python", reload: bool = False) -> list[str]:
        """The bin/train.py command line (to run from the repository root)."""
        return [
            python,
            "bin/train.py",
            str(self.save_dir),
            *self.config_files,
            *(["-b", RELOAD] if reload else []),
        ]

    def command_line(self) -> str:
        return shlex.join(self.command())

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "save_dir": str(self.save_dir)}

    @classmethod
    def from_dict(cls, data: dict) -> "Run":
        return cls(**{**data, "save_dir": Path(data["save_dir"])})


@dataclasses.dataclass
class RunState:
    """What the run folder of a prepared run says, and what `run` should do with it."""

    status: str  # missing | running | stale | finished | failed | interrupted
    action: str  # start | reload | skip | busy | conflict
    differences: list[str] = dataclasses.field(default_factory=list)
    meta: dict | None = None


def inspect_run(run: Run, root: Path) -> RunState:
    """Read the run folder of `run` and decide what to do with it (see the module docstring)."""
    try:
        meta = read_meta(run.save_dir)
    except RunFolderError as error:  # damaged, or written by a newer ginlab: bin/train.py would refuse it too
        return RunState("damaged", "conflict", [str(error)])
    if meta is None:
        return RunState("missing", "start")
    status = effective_status(meta)
    # What a reload may change freely (logging, checkpoint cadence, epochs ...) is no conflict.
    differences = [d for d in config_differences(run, root) if not _bookkeeping(d.split(":", 1)[0])]
    if differences:
        return RunState(status, "conflict", differences, meta)
    action = {"finished": "skip", "running": "busy"}.get(status, "reload")
    return RunState(status, action, [], meta)


def _bookkeeping(key: str) -> bool:
    return key in BOOKKEEPING or key.startswith(BOOKKEEPING_PREFIXES)


def read_meta(save_dir: Path) -> dict | None:
    """The run folder's meta.json (the one reader), or None when the run has not started there."""
    if not (Path(save_dir) / "meta.json").exists():
        return None
    return read_run_meta(save_dir)


effective_status = run_status  # the one status rule (ginlab.runfolder.status)


def config_differences(run: Run, root: Path) -> list[str]:
    """The gin bindings on which the run folder's saved configs and the prepared configs disagree.

    Compares the values' canonical text (ginlab.gin_reader, mode "text"), not the files: comments, layout
    and order do not count, and `1e-3` equals `0.001`. Each difference reads "name: run folder has X,
    prepared Y".
    """
    saved_dir = run.save_dir / "configs"
    saved_files = sorted(p for p in saved_dir.glob("*.gin") if p.name != "bindings.gin")
    if not saved_files:
        return [f"configs: {saved_dir} holds no config files, so the run cannot be compared"]
    if (saved_dir / "bindings.gin").is_file():
        saved_files.append(saved_dir / "bindings.gin")
    try:
        saved = {}
        for path in saved_files:
            saved.update(read_gin(path.read_text(), str(path), mode="text", root=root))
        prepared = {}
        for name in run.config_files:
            path = Path(name) if Path(name).is_absolute() else root / name
            if path.is_file():
                prepared.update(read_gin(path.read_text(), str(path), mode="text", root=root))
            else:
                prepared[f"file {name}"] = "missing"
    except ValueError as error:  # a run that cannot be compared is not taken for the prepared one
        return [f"configs: {error} Until then the run cannot be compared with the prepared one."]
    differences = []
    for key in dict.fromkeys([*prepared, *saved]):
        if key in IGNORED or saved.get(key) == prepared.get(key):
            continue
        differences.append(
            f"{key}: run folder has {saved.get(key, '(not set)')}, prepared {prepared.get(key, '(not set)')}"
        )
    return differences
