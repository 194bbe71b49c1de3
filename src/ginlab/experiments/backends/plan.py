"""What to do with each prepared run, how it ended, and how to say so: the one module both backends share.

`plan_run` reads a prepared run's folder through ginlab.runfolder (the one reader, the one status rule) and
compares it with the prepared configuration:

    run folder                                            status        action
    absent, or empty                                      missing       start
    finished, with the prepared number of epochs          finished      skip
    finished, asked for more epochs                       finished      reload (bin/train.py extends it)
    interrupted, failed, or died silently                 interrupted,  reload
                                                          failed, stale
    diverged, pruned                                      diverged,     skip: a diverged run would diverge
                                                          pruned        again; a pruned one was stopped on
                                                                        purpose
    its process is alive                                  running       busy: left to that process
    start/reload, but another runner holds its claim      (any)         busy: left to that runner
    locked by a live bin/train.py, no meta.json yet       missing       busy: left to that process
    made with another config                              (any)         refuse, naming each difference
    unreadable or newer meta.json, files of no run,       damaged       refuse, with the reader's message
    a format-1 run that would have to be continued

Whether a run starts or continues is not decided here: every backend runs the same command,
`bin/train.py ... -b training_loop.reload="auto"` (Run.command), and bin/train.py decides. The plan only
predicts it, with bin/train.py's own rules, so that a backend never starts a run that bin/train.py would
refuse and never refuses one it would accept: the folder is judged by ginlab.runfolder.plan_start, the
finished epochs by ginlab.runfolder.nothing_to_do, and config differences by ginlab.config.reload.classify
(what is bookkeeping, what a reload may apply, what it refuses).
"""

from __future__ import annotations

import dataclasses
import signal
import socket
from pathlib import Path

from ginlab.config.reader import read_gin
from ginlab.config.reload import Change, classify
from ginlab.errors import ExitCode, RunFolderError
from ginlab.experiments.backends.claims import RunClaim, describe_holder
from ginlab.experiments.experiment import Run
from ginlab.experiments.progress import Counts
from ginlab.processes import process_alive
from ginlab.runfolder import (
    RunPaths,
    describe_owner,
    nothing_to_do,
    plan_start,
    read_config_json,
    read_json,
    read_meta,
)
from ginlab.runfolder import format as fmt
from ginlab.runfolder.status import run_status

MISSING, DAMAGED = "missing", "damaged"  # statuses of a prepared run besides those of ginlab.runfolder.format
START, RELOAD, SKIP, BUSY, REFUSE = "start", "reload", "skip", "busy", "refuse"
# Runs whose status is one of these have ended for good: running them again would change nothing.
ENDED_FOR_GOOD = (fmt.FINISHED, fmt.DIVERGED, fmt.PRUNED)


@dataclasses.dataclass
class RunState:
    """What a prepared run's folder says, and what `run` does with it (see the module docstring).

    Args:
        status: missing, damaged, or the run's status (ginlab.runfolder.run_status).
        action: start, reload, skip, busy or refuse.
        reasons: refuse: each config difference or problem; busy: who has the run.
        meta: the run's meta.json, when it has a readable one.
        holder: busy because another runner claimed it: who ({"host", "pid", "since"}).
    """

    status: str
    action: str
    reasons: list[str] = dataclasses.field(default_factory=list)
    meta: dict | None = None
    holder: dict | None = None

    @property
    def shown_status(self) -> str:
        """The status a person is shown: "refused" for a run made with another config, "starting" for a
        run that another runner or process is starting."""
        if self.action == REFUSE and self.status != DAMAGED:
            return "refused"
        if self.action == BUSY and self.status == MISSING:
            return "starting"
        return self.status


def plan_run(run: Run, root: Path, claims: Path | None = None) -> RunState:
    """Read the run folder of `run` and decide what to do with it (see the module docstring).

    Args:
        run: the prepared run.
        root: the repository root (bin/train.py's working directory: config paths are relative to it).
        claims: the experiment's claims folder: a run another runner holds is "busy". None: claims are not
            looked at (the caller holds the claim itself).
    """
    state = _plan_folder(run, root)
    if state.action in (START, RELOAD) and claims is not None:
        holder = RunClaim(claims, run.name).holder()
        if holder is not None:
            return dataclasses.replace(
                state, action=BUSY, reasons=[f"claimed by {describe_holder(holder)}"], holder=holder
            )
    return state


def _plan_folder(run: Run, root: Path) -> RunState:
    try:
        if not (run.save_dir / fmt.META).is_file():
            # A missing or empty folder starts; anything else is refused as bin/train.py would refuse it.
            plan_start(run.save_dir, "auto")
            writer = _live_writer(run.save_dir)
            if writer is not None:  # a bin/train.py took the folder and has not written meta.json yet
                where = f"host {writer.get('host')}, pid {writer.get('pid')}"
                return RunState(MISSING, BUSY, [f"being started by another process ({where})"])
            return RunState(MISSING, START)
        meta = read_meta(run.save_dir)
    except RunFolderError as error:  # damaged, newer format, a folder of someone else's files
        return RunState(DAMAGED, REFUSE, [str(error)])
    status = run_status(meta)
    try:
        saved, started, prepared, problems = _configs(run, root)
    except RunFolderError as error:  # config.json damaged
        return RunState(DAMAGED, REFUSE, [str(error)], meta)
    differences = problems + [_describe(change, saved) for change in conflicts(saved, prepared, started)]
    if differences:
        return RunState(status, REFUSE, differences, meta)
    if status == fmt.RUNNING:
        return RunState(status, BUSY, [f"running in another process ({describe_owner(meta)})"], meta)
    if status == fmt.FINISHED and _trained_enough(run, meta, saved, prepared):
        return RunState(status, SKIP, [], meta)
    if status in (fmt.DIVERGED, fmt.PRUNED):
        return RunState(status, SKIP, [], meta)
    if meta.get("format_version") == 1:  # bin/train.py reads format-1 runs but does not continue them
        commit = (meta.get("git") or {}).get("commit")
        return RunState(DAMAGED, REFUSE, [
            f"it was written by ginlab 0.1 (run-folder format_version 1), which this ginlab reads but does "
            f"not continue; continue it with the code it was started with (git commit {commit})",
        ], meta)  # fmt: skip
    return RunState(status, RELOAD, [], meta)


def _live_writer(save_dir: Path) -> dict | None:
    """Who holds the run folder's lock ({"host", "pid", ...} of its .lock.json), while that process lives on
    this host. Read, never locked: taking the lock, even for a moment, could turn a starting writer away."""
    try:
        info = read_json(Path(save_dir) / fmt.LOCK_INFO)
    except (OSError, RunFolderError):  # no writer, or one that is writing the file right now
        return None
    if not isinstance(info, dict):
        return None
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int) or not process_alive(pid):
        return None  # gone (a writer that died leaves the file), or on another host: bin/train.py decides
    return info


def _trained_enough(run: Run, meta: dict, saved: dict, prepared: dict) -> bool:
    """bin/train.py's rule for "finished already": the epochs the reload would ask for are done."""
    key = "training_loop.n_epochs"
    n_epochs = prepared.get(key, saved.get(key))
    if not isinstance(n_epochs, int) or isinstance(n_epochs, bool):
        return True  # nothing asks for more than the run did
    return nothing_to_do(run.save_dir, meta, n_epochs)


# --- configs: the run folder's against the prepared ones --------------------------------------------------


def conflicts(saved: dict, prepared: dict, started: dict | None = None) -> list[Change]:
    """The differences that keep a run saved with `saved` from being continued with the `prepared` config.

    bin/train.py's rules for a reload (ginlab.config.reload.classify): bookkeeping changes are taken as they
    are (epochs, logging, checkpoint cadence ...); the hyperparameters of the run's optimizer and schedule
    are applied only with training_loop.reload_allow_changes=True; everything else is refused. One addition:
    a value the run never used (config.json holds only what was used, e.g. `Adam.lr` of a run trained with
    SGD) is no difference when the run's own config files bound it to the same value.

    Args:
        saved: the run's values (config.json), keyed by gin's shortest names ("Adam.lr").
        prepared: the values the prepared config files bind, keyed as written ("torch.optim.Adam.lr").
        started: the values the run's own config files bound (its configs/), keyed as written.
    """
    started = started or {}
    names = {key: _saved_name(key, saved) for key in prepared}
    new = {names[key]: value for key, value in prepared.items()}
    unused_as_before = {
        names[key]
        for key, value in prepared.items()
        if names[key] not in saved and key in started and started[key] == value
    }
    allowed = new.get("training_loop.reload_allow_changes", saved.get("training_loop.reload_allow_changes"))
    return [
        change
        for change in classify(saved, new)
        if change.key not in unused_as_before
        and (change.kind == "refused" or (change.kind == "applied" and allowed is not True))
    ]


def _saved_name(key: str, saved: dict) -> str:
    """The name under which config.json keeps `key`: gin writes the shortest unambiguous name of each
    configurable ("torch.optim.Adam.lr" is kept as "Adam.lr"), so the longest suffix that it has wins."""
    if key in saved:
        return key
    scope, slash, name = key.rpartition("/")
    parts = name.split(".")
    for start in range(1, len(parts) - 1):  # keep at least "configurable.param"
        candidate = f"{scope}{slash}{'.'.join(parts[start:])}"
        if candidate in saved:
            return candidate
    return key


def _configs(run: Run, root: Path) -> tuple[dict, dict, dict, list[str]]:
    """(the run's saved values, the values its own config files bound, the prepared values, problems that
    prevent comparing them).

    Raises:
        RunFolderError: the run's config.json is damaged.
    """
    files = [Path(name) if Path(name).is_absolute() else root / name for name in run.config_files]
    prepared, problems = _read_texts(files, root, "prepared")
    started_files = RunPaths(run.save_dir).config_files()
    started, more = _read_texts(started_files, root, "run folder")
    saved = read_config_json(run.save_dir)
    if saved is None:  # killed before config.json was written: what it was started with is the reference
        if not started_files:
            problems.append(f"configs: {run.save_dir / fmt.CONFIGS} holds no config files to compare with")
        saved, problems = started, problems + more
    return saved, started, prepared, problems


def _read_texts(paths: list[Path], root: Path, whose: str) -> tuple[dict, list[str]]:
    """The values gin would bind from these files read in order (macros shared across them, as in gin)."""
    texts, problems = [], []
    for path in paths:
        if not path.is_file():
            problems.append(f"{whose} config file {path} is missing")
            continue
        text = path.read_text()
        try:  # each file alone first, so that an error names its file
            read_gin(text, str(path), mode="values", root=root)
        except ValueError as error:
            problems.append(f"{whose} config: {error}")
            continue
        texts.append(text)
    values = read_gin("\n".join(texts), mode="values", root=root) if texts else {}
    for key in [key for key in values if key.startswith("include ")]:
        if values.pop(key) == "missing":
            problems.append(f"{whose} config: {key[len('include ') :]} is included but missing")
    return values, problems


def _describe(change: Change, saved: dict) -> str:
    old = repr(saved[change.key]) if change.key in saved else "(not set)"
    return f"{change.key}: run folder has {old}, prepared {change.new!r}"


# --- how a run ended in this invocation of `run` ------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """How a run ended in this invocation of `run`.

    Args:
        run: the prepared run.
        status: finished, skipped (had finished before), diverged, pruned, failed, interrupted, refused,
            busy (left to another process) or queued (still on SLURM).
        message: the detail shown to the researcher.
        log: the file with the run's output (local log or SLURM output).
        attempts: how often this invocation started it.
        seconds: wall time of this invocation's attempts.
    """

    run: Run
    status: str
    message: str = ""
    log: Path | None = None
    attempts: int = 0
    seconds: float = 0.0

    @property
    def ended_for_good(self) -> bool:
        """Nothing is left to do for this run: it finished (now or before), diverged or was pruned."""
        return self.status in ("skipped", *ENDED_FOR_GOOD)


def skipped(run: Run, state: RunState) -> Outcome:
    """The outcome of a run that is not started because it ended for good before."""
    if state.status == fmt.FINISHED:
        return Outcome(run, "skipped", "finished before")
    error = ((state.meta or {}).get("error") or {}).get("message") or ""
    why = {
        fmt.DIVERGED: "not retried: it would diverge again",
        fmt.PRUNED: "not retried: it was stopped on purpose",
    }[state.status]
    said = f": {first_sentence(error)}" if error else ""
    return Outcome(run, state.status, f"{state.status} before{said}; {why}")


def count(outcomes, running: int = 0, left: int = 0) -> Counts:
    """The progress counts of these outcomes, with `running` runs going and `left` waiting to start."""
    statuses = [outcome.status for outcome in outcomes]
    return Counts(
        done=statuses.count("finished") + statuses.count("skipped"),
        running=running,
        failed=statuses.count("failed"),
        left=left,
        refused=statuses.count("refused"),
        diverged=statuses.count(fmt.DIVERGED),
        pruned=statuses.count(fmt.PRUNED),
    )


# --- failure text ------------------------------------------------------------------------------------------


def describe_exit(code: int, meta: dict | None, detail: str | None = None) -> str:
    """Why bin/train.py ended with `code` (ginlab.errors.ExitCode), with the error it recorded or printed.

    Args:
        code: the exit code (negative: killed by that signal).
        meta: the run's meta.json after the exit (its error), if readable.
        detail: what bin/train.py printed, for a refusal (exit USAGE writes nothing into the run folder).
    """
    if code < 0 or (code > 128 and _signal_name(code - 128)):
        number = -code if code < 0 else code - 128
        text = f"was killed by {_signal_name(number) or f'signal {number}'}"
    else:
        text = {
            ExitCode.FINISHED: "exited 0 without recording a finished run",
            ExitCode.FAILED: f"failed (exit {code})",
            ExitCode.USAGE: f"was refused by bin/train.py (exit {code}: configuration or run-folder error)",
            ExitCode.INTERRUPTED: f"was interrupted from outside (exit {code}, checkpoint written)",
            ExitCode.DIVERGED: f"diverged (exit {code})",
        }.get(code, f"failed (exit {code})")
    if detail:
        return f"{text}: {detail}"
    if code == ExitCode.USAGE:  # meta.json still holds an earlier attempt's error: not this one's
        return text
    error = (meta or {}).get("error") or {}
    if error.get("message"):
        text += f": {error.get('type', 'Error')}: {error['message']}"
    return text


def _signal_name(number: int) -> str | None:
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def first_sentence(text: str) -> str:
    return text.split(". ")[0].rstrip(".")


def refusal_message(run: Run, state: RunState) -> str:
    """REFUSED <run>: why, one line per difference or problem, and how to go on."""
    if state.status == DAMAGED:
        lines = [f"REFUSED {run.name}: its run folder {run.save_dir} cannot be used:"]
    else:
        lines = [f"REFUSED {run.name}: its run folder {run.save_dir} was made with another config:"]
    lines += [f"    {reason}" for reason in state.reasons]
    lines.append("    Move that folder away (or prepare the experiment under another name) to run it again.")
    return "\n".join(lines)
