"""How a run ends, recorded in meta.json so that the record and the exit code always agree.

    finished     0   the loop ended and the summary is written
    failed       1   an exception (its type, message and traceback go to meta.json)
    interrupted  3   a stop signal after a checkpoint (or a second Ctrl-C): reload continues it
    diverged     4   the training loss or the weights became NaN or infinite

bin/train.py exits with the code recorded here: a second Ctrl-C while the process ends must not turn an
"interrupted, exit 3" record into a process killed by SIGINT (ginlab.training.main).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import traceback

from ginlab.errors import ExitCode
from ginlab.runfolder import format as fmt

log = logging.getLogger("ginlab.progress")


def ignore_stop_signals() -> None:
    """From here on a stop signal changes nothing: the stop (or the outcome) is decided, and a Ctrl-C's
    KeyboardInterrupt must not cut its recording short (it left meta.json saying "running")."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(sig, signal.SIG_IGN)


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint; reload continues it exactly."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class Diverged(Exception):
    """The training loss (or the weights) became NaN or infinite."""

    def __init__(self, step: int, epoch: int, what: str):
        super().__init__(
            f"{what} at step {step} (epoch {epoch + 1}): the run diverged and stopped. Its newest checkpoint is "
            "the last finite state. Lower the learning rate or clip gradients (training_loop.gradient_clip_val), "
            "or keep training through it with -b divergence.stop=False."
        )
        self.step, self.epoch = step, epoch


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


@contextlib.contextmanager
def signal_handlers_kept():
    """Restore the process's handlers of the stop signals afterwards (the Checkpointer installs its own)."""
    try:
        saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    except ValueError:  # not the main thread
        saved = {}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def record(run, status: str, code: ExitCode, error: BaseException | None = None, note: str = "") -> None:
    """Write the outcome into meta.json: status, exit code, error with traceback."""
    details = None
    if error is not None:
        details = {
            "type": type(error).__name__,
            "message": str(error) + note,
            "traceback": "".join(traceback.format_exception(error)),
        }
    run.mark_ended(status, int(code), details)


@contextlib.contextmanager
def recording(run, workers, checkpointer, fresh: bool):
    """Record in meta.json how the block ends (see the module docstring), then let the exception go on.

    Args:
        run: the RunFolder.
        workers: the other DDP processes of this node (their failures are added to the error).
        checkpointer: the Checkpointer (whether a second Ctrl-C stopped the run), or None before it exists.
        fresh: the run started fresh here: if even its failure cannot be recorded (a full disk) and it has not
            written a checkpoint, its folder is removed rather than left saying "running".
    """
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    try:
        yield
    except Interrupted as stop:
        log.info("interrupted (%s); continue with -b training_loop.reload=True", stop)
        record(run, fmt.INTERRUPTED, ExitCode.INTERRUPTED)
        raise
    except SIGTERMException:  # Lightning's own SIGTERM path (should not happen: ginlab's replaces it)
        record(run, fmt.INTERRUPTED, ExitCode.INTERRUPTED)
        raise Interrupted(signal.SIGTERM) from None
    except Diverged as error:
        log.info("DIVERGED: %s", error)
        workers.finish(failed=True)
        record(run, fmt.DIVERGED, ExitCode.DIVERGED, error)
        raise
    except BaseException as error:
        failed_others = workers.finish(failed=True)
        if (
            isinstance(error, KeyboardInterrupt | SystemExit)
            and checkpointer is not None
            and checkpointer.hard_stop
        ):
            # Lightning turns the second Ctrl-C's KeyboardInterrupt into SystemExit(1).
            log.info("stopped by a second Ctrl-C: continue from the newest checkpoint with "
                     "-b training_loop.reload=True")  # fmt: skip
            record(run, fmt.INTERRUPTED, ExitCode.INTERRUPTED)
            raise Interrupted(signal.SIGINT) from None
        if failed_others:
            log.info("other processes of this run: %s", "; ".join(failed_others))
        note = "".join(f"\n{p}" for p in failed_others)
        try:
            record(run, fmt.FAILED, ExitCode.FAILED, error, note)
        except OSError as unrecorded:
            _unrecorded(run, fresh, error, unrecorded)
        raise


def _unrecorded(run, fresh: bool, error: BaseException, unrecorded: OSError) -> None:
    """The failure could not be written (a full disk): leave no folder that says "running" when that is cheap."""
    try:
        trained = bool(run.read_meta().get("last_checkpoint"))
    except Exception:
        trained = False
    if fresh and not trained:
        run.discard()
        log.info("could not record the failure (%s): the run folder %s was removed; it held no checkpoint",
                 unrecorded.strerror or unrecorded, run.path)  # fmt: skip
    else:
        log.info("could not record the failure in %s (%s); readers see the run as stale once its process is gone",
                 run.meta, unrecorded.strerror or unrecorded)  # fmt: skip
    error.add_note(f"(meta.json could not be updated: {unrecorded})")
